"""bot/slack/inputs.py: who acts, read the same way from every kind of Slack payload, and the
values every surface sends checked before use."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.domain.models import Requester
from bot.slack.inputs import (
    MAX_REF,
    UnreadablePayload,
    UsageError,
    count_of,
    note_of,
    ref_of,
    requester_from,
)

REP = Requester(team_id="T0FAKE", user_id="U0REP", channel_id="C0SALES")


@pytest.mark.parametrize("payload", [
    {"team_id": "T0FAKE", "user_id": "U0REP", "channel_id": "C0SALES"},  # a slash command
    {"team": {"id": "T0FAKE"}, "user": {"id": "U0REP"}, "channel": {"id": "C0SALES"}},  # a click
], ids=["command", "interaction"])
def test_commands_and_interactions_give_the_same_requester(payload: dict[str, Any]) -> None:
    assert requester_from(payload) == REP


def test_events_and_steps_name_the_user_and_channel_themselves() -> None:
    body = {"team_id": "T0FAKE", "event": {}}
    assert requester_from(body, user="U0REP", channel="C0SALES") == REP
    assert requester_from({"team": {"id": "T0FAKE"}, "user": {"id": "U0REP"}},
                          channel="") == REP.model_copy(update={"channel_id": ""})


@pytest.mark.parametrize("user", [None, "", "u0rep", "U0REP<@x>", "X0REP", 42, {"id": "U0REP"}])
def test_no_user_of_slacks_shape_means_nobody_to_act_for(user: Any) -> None:
    with pytest.raises(UnreadablePayload):
        requester_from({"team_id": "T0FAKE", "channel_id": "C0SALES"}, user=user)


def test_a_team_or_channel_of_another_shape_is_left_empty() -> None:
    payload = {"team_id": "../etc", "user_id": "U0REP", "channel_id": "C0SALES\n"}
    assert requester_from(payload) == Requester(team_id="", user_id="U0REP", channel_id="")


def test_a_note_from_any_surface_loses_bidi_controls_and_extra_space() -> None:
    assert note_of("  ACME \u202eevil\u2066 *bold*\n co ") == "ACME evil *bold* co"
    assert note_of(None) == ""
    with pytest.raises(UsageError, match="500 characters"):
        note_of("x" * 501)
    with pytest.raises(UsageError):
        note_of(12)


@pytest.mark.parametrize(("value", "count"), [(None, 1), ("", 1), ("3", 3), (50, 50), (2.0, 2)])
def test_counts(value: Any, count: int) -> None:
    assert count_of(value) == count


@pytest.mark.parametrize("value", [0, 51, "2.5", True, "x", -1])
def test_bad_counts(value: Any) -> None:
    with pytest.raises(UsageError):
        count_of(value)


@pytest.mark.parametrize(("value", "ref"), [
    (None, ""), ("", ""), ("   ", ""),
    ("hubspot-12345", "hubspot-12345"),
    ("  priya@acme.example ", "priya@acme.example"),  # the form's and the step's, trimmed
    ("Account 42", "Account 42"),  # a space inside is the CRM's own
    ("crm\u202e-42\u2066", "crm-42"),  # bidi controls dropped, as from notes
    ("Café-Ω-\u05e9", "Café-Ω-\u05e9"),  # other text is the user's
    ("r" * MAX_REF, "r" * MAX_REF),
])
def test_a_crm_reference_from_any_surface(value: Any, ref: str) -> None:
    assert ref_of(value) == ref


@pytest.mark.parametrize(("value", "says"), [
    ("a\nb", "line breaks, tabs or other control characters"),
    ("a\tb", "control characters"),
    ("a\x7fb", "control characters"),  # DEL
    ("a\x85b", "control characters"),  # C1: next line
    ("a\u2028b", "control characters"),  # line separator
    ("a\ufeffb", "control characters"),  # zero-width no-break space
    ("a\ud800b", "control characters"),  # a lone surrogate: not text Redis could store
    ("r" * (MAX_REF + 1), f"to {MAX_REF} characters (it has {MAX_REF + 1})"),
    (42, "must be text"),
])
def test_a_bad_crm_reference_is_refused_saying_why(value: Any, says: str) -> None:
    with pytest.raises(UsageError, match=re.escape(says)):
        ref_of(value)
