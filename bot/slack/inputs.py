"""Values from Slack's payloads checked before use: who acts (`requester_from`), Slack ids,
link counts, customer notes and CRM references, the same way for every surface.

Slash command text has its own parser (bot.slack.command_text), which reads counts and notes
with these; each value is validated here before it reaches Redis or Exotel."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from bot.domain.models import Requester

MAX_LINKS = 50
MAX_NOTE = 500
MAX_REF = 200

USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,20}")
TEAM_ID = re.compile(r"[TE][A-Z0-9]{2,20}")
MESSAGE_TS = re.compile(r"\d{1,12}\.\d{1,9}")
# Opaque ids Slack hands back to us as they are (function executions, unfurls, triggers).
OPAQUE_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
# Bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): in a note they would
# reorder what readers of a listing or reminder see.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
# What a CRM reference may not hold (after bidi controls are stripped): control characters
# (C0, DEL, C1: tabs, line breaks, escapes), invisible format characters (zero-width ones),
# line and paragraph separators, and lone surrogates (not text at all).
REF_REFUSED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
REF_RULE = (f"a CRM record id or an email, up to {MAX_REF} characters, like hubspot-12345 or "
            "priya@acme.example")


class UnreadablePayload(ValueError):
    """A payload without a user id of Slack's shape: nobody the bot could act for."""


class UsageError(Exception):
    """A value can't be acted on; the message says why and what to give instead."""


def strip_bidi(text: str) -> str:
    return BIDI_CONTROLS.sub("", text)


def count_of(value: Any, default: int = 1) -> int:
    """A link count: a whole number 1–MAX_LINKS given as a number or digits; None → default."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise UsageError(f"The number of links must be a whole number from 1 to {MAX_LINKS}.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 1 <= value <= MAX_LINKS:
        shown = str(value)[:20]
        raise UsageError(f"The number of links must be a whole number from 1 to {MAX_LINKS}; "
                         f"“{shown}” is not.")
    return value


def note_of(value: Any) -> str:
    """A customer note from any surface: bidi controls dropped, whitespace folded, up to
    MAX_NOTE characters; None → ''. The one way a note enters the bot."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UsageError("The customer note must be text.")
    note = " ".join(strip_bidi(value).split())
    if len(note) > MAX_NOTE:
        raise UsageError(f"Please keep the customer note to {MAX_NOTE} characters "
                         f"(it has {len(note)}).")
    return note


def ref_of(value: Any) -> str:
    """A customer reference (a CRM record id or an email) from any surface: bidi controls
    dropped, surrounding spaces trimmed, any other control character refused, up to MAX_REF
    characters; None → ''. The one way a reference enters the bot."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UsageError(f"The CRM reference must be text: {REF_RULE}.")
    ref = strip_bidi(value).strip()
    if any(unicodedata.category(c) in REF_REFUSED for c in ref):
        raise UsageError("The CRM reference can't hold line breaks, tabs or other control "
                         f"characters: give {REF_RULE}.")
    if len(ref) > MAX_REF:
        raise UsageError(f"Please keep the CRM reference to {MAX_REF} characters (it has "
                         f"{len(ref)}).")
    return ref


def matches(pattern: re.Pattern[str], value: Any) -> str | None:
    """`value` if it is a string of `pattern`'s shape, else None."""
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


_FROM_PAYLOAD: Any = object()


def requester_from(payload: Mapping[str, Any], *, user: Any = _FROM_PAYLOAD,
                   channel: Any = _FROM_PAYLOAD) -> Requester:
    """Who acts, and where, from any Slack payload: the one way every listener builds it.

    Slash commands carry the ids flat (`team_id`, `user_id`, `channel_id`); interactions
    nest them (`team.id`, `user.id`, `channel.id`); events and workflow steps carry the user
    and channel elsewhere, so their listeners pass those as `user` and `channel` (`""`: no
    channel). Each id is checked for Slack's shape: a team or channel of another shape is
    left empty, a user raises UnreadablePayload (there is nobody to act for)."""
    if user is _FROM_PAYLOAD:
        user = payload.get("user_id") or _nested(payload, "user")
    if channel is _FROM_PAYLOAD:
        channel = payload.get("channel_id") or _nested(payload, "channel")
    team = payload.get("team_id") or _nested(payload, "team")
    user_id = matches(USER_ID, user)
    if user_id is None:
        raise UnreadablePayload("Slack's request named no user the bot could act for")
    return Requester(team_id=matches(TEAM_ID, team) or "", user_id=user_id,
                     channel_id=matches(CHANNEL_ID, channel) or "")


def _nested(payload: Mapping[str, Any], key: str) -> Any:
    value = payload.get(key)
    return value.get("id") if isinstance(value, Mapping) else None
