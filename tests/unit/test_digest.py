"""The managers' digest without Redis or Slack: its settings, when it ticks (time zones and
their clock changes), the issue-again buttons' value, the message at its largest, and the
Renew button's listener."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import MagicMock
from zoneinfo import ZoneInfo

import pytest
from slack_sdk.models.blocks import Block

from bot.__main__ import main
from bot.domain.digest import latest_tick, next_tick
from bot.domain.history import LinkRecord, summarise
from bot.engine.registry import Job
from bot.settings import HINTS, SettingsError, load_settings
from bot.slack import linkviews, messages
from bot.slack.command_text import (
    MAX_BUTTON_VALUE,
    OnboardRequest,
    again_value,
    parse_again,
)
from bot.slack.inputs import MAX_NOTE, MAX_REF, UsageError
from handlers.actions import issue_anyway, renew_customer
from tests.blockkit import assert_inert, assert_within_slack_limits, block_text, blocks_of
from tests.unit.test_listeners import REASON, REP, URL, click_body, context, mock_core

BASE = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "EXOTEL_API_KEY": "k",
        "EXOTEL_API_TOKEN": "t", "EXOTEL_ACCOUNT_SID": "acme1"}
UTC_ZONE = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")
AT = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)


# --- the settings --------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value", "problem"), [
    ("DIGEST_CHANNEL", "#managers", "not a Slack channel id"),
    ("DIGEST_CHANNEL", "D0DM12345", "not a Slack channel id"),  # a DM is no channel
    ("DIGEST_CRON", "0 9 * *", "has 4 fields"),
    ("DIGEST_CRON", "0 9 * * 1 2026", "has 6 fields"),
    ("DIGEST_CRON", "61 9 * * 1", "is not a cron expression"),
    ("DIGEST_CRON", "H 9 * * 1", "is not a cron expression"),
    ("DIGEST_CRON", "0 0 30 2 *", "names no date that exists"),
    ("DIGEST_TIMEZONE", "Mars/Olympus", "is not an IANA time zone name"),
    ("DIGEST_TIMEZONE", "../../etc/passwd", "is not an IANA time zone name"),
])
def test_malformed_digest_settings_are_refused_with_a_hint(name: str, value: str,
                                                           problem: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, **BASE, **{name: value})
    line = next(li for li in str(refused.value).splitlines() if li.startswith(f"- {name}: "))
    assert problem in line and HINTS[name] in line


def test_a_malformed_digest_setting_stops_start_up_with_exit_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in {**BASE, "DIGEST_CRON": "every monday"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir("/")  # no .env here
    assert main(["jobs"]) == 2
    assert "- DIGEST_CRON: " in capsys.readouterr().err


def test_the_digest_settings_and_their_defaults() -> None:
    plain = load_settings(_env_file=None, **BASE)
    assert plain.digest_channel is None  # no digest
    assert (plain.digest_cron, plain.digest_zone) == ("0 9 * * 1", UTC_ZONE)
    set_ = load_settings(_env_file=None, **BASE, DIGEST_CHANNEL="G0MANAGERS",
                         DIGEST_CRON=" 30  8 * * MON-FRI ", DIGEST_TIMEZONE="Asia/Kolkata")
    assert set_.digest_channel == "G0MANAGERS"
    assert set_.digest_cron == "30 8 * * MON-FRI"
    assert set_.digest_zone == ZoneInfo("Asia/Kolkata")


# --- when it ticks -------------------------------------------------------------------------

def test_the_latest_tick_is_at_or_before_now_in_the_zone() -> None:
    assert latest_tick("0 9 * * 1", UTC_ZONE, AT) == AT  # a tick at exactly now counts
    assert latest_tick("0 9 * * 1", UTC_ZONE, AT - timedelta(seconds=1)) == AT - 7 * DAY
    assert latest_tick("0 9 * * 1", UTC_ZONE, AT + timedelta(microseconds=500)) == AT
    # 9:00 in Kolkata (UTC+5:30) is 3:30 UTC.
    kolkata = ZoneInfo("Asia/Kolkata")
    assert latest_tick("0 9 * * 1", kolkata, AT) == datetime(2026, 12, 7, 3, 30, tzinfo=UTC)
    assert next_tick("0 9 * * 1", kolkata, datetime(2026, 12, 7, 3, 30, tzinfo=UTC)) == (
        datetime(2026, 12, 14, 3, 30, tzinfo=UTC))
    assert next_tick("* * * * *", UTC_ZONE, AT) == AT + timedelta(minutes=1)


def test_a_wall_clock_time_skipped_by_the_clocks_going_forward_ticks_as_late_as_they_jumped(
) -> None:
    """New York, 2026-03-08: 02:00 EST became 03:00 EDT; a daily 02:30 comes at 03:30 EDT."""
    assert next_tick("30 2 * * *", NEW_YORK, datetime(2026, 3, 7, 8, 0, tzinfo=UTC)) == (
        datetime(2026, 3, 8, 7, 30, tzinfo=UTC))  # 03:30 EDT
    before = datetime(2026, 3, 8, 7, 10, tzinfo=UTC)  # 03:10 EDT: not yet
    assert latest_tick("30 2 * * *", NEW_YORK, before) == datetime(2026, 3, 7, 7, 30,
                                                                     tzinfo=UTC)
    assert latest_tick("30 2 * * *", NEW_YORK, datetime(2026, 3, 8, 7, 30, tzinfo=UTC)) == (
        datetime(2026, 3, 8, 7, 30, tzinfo=UTC))


def test_a_wall_clock_time_that_comes_twice_as_the_clocks_go_back_ticks_once() -> None:
    """New York, 2026-11-01: 02:00 EDT became 01:00 EST; a daily 01:30 ticks at the first."""
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    assert latest_tick("30 1 * * *", NEW_YORK, first + timedelta(minutes=15)) == first
    # 01:45 EST, the second time round: the latest tick is still the first 01:30.
    assert latest_tick("30 1 * * *", NEW_YORK, first + timedelta(hours=1, minutes=15)) == first
    assert next_tick("30 1 * * *", NEW_YORK, first) == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)
    # Every minute: the repeated hour's ticks are the first hour's, already past.
    last_edt = datetime(2026, 11, 1, 5, 59, tzinfo=UTC)
    assert next_tick("* * * * *", NEW_YORK, last_edt) == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)


# --- the issue-again buttons' value --------------------------------------------------------

@pytest.mark.parametrize(("count", "note", "ref"), [
    (1, "ACME", ""),
    (3, "ACME Corp, Priya's team", "ACME Corp"),  # a reference with spaces
    (1, "ask for ref:42 at the desk", "hubspot-12345"),  # a note with a `ref:` word
    (50, 'quotes " and \\ backslashes {"count":1}', "a@b.example"),
    (1, "नमस्ते 😀 <!channel> *bold*", "crm <x>"),
    (1, "N" * MAX_NOTE, "R" * MAX_REF),
    (2, "", ""),
])
def test_again_values_come_back_as_they_went(count: int, note: str, ref: str) -> None:
    value = again_value(count, note, ref)
    assert len(value) <= MAX_BUTTON_VALUE
    assert parse_again(value) == OnboardRequest(count, note, ref)


def test_buttons_posted_before_the_json_value_are_still_read_as_the_command() -> None:
    assert parse_again("2 ACME") == OnboardRequest(2, "ACME", "")
    assert parse_again("2 ACME ref:crm-1") == OnboardRequest(2, "ACME", "crm-1")


@pytest.mark.parametrize("value", [
    None, "", 7, ["1 ACME"], "x" * (MAX_BUTTON_VALUE + 1),
    "list all", "report 7", "forget 3f1c2a9e-5b7d-4e0f-9a21-7c6d5e4b3a10", "help",
    "0 ACME", "51 ACME", "2 ACME ref:a ref:b",
    "{", "{}", '{"count":1,"note":"a"}', '{"count":1,"note":"a","ref":"","x":1}',
    '{"count":true,"note":"a","ref":""}', '{"count":0,"note":"a","ref":""}',
    '{"count":51,"note":"a","ref":""}', '{"count":"2","note":"a","ref":""}',
    '{"count":1.5,"note":"a","ref":""}', '{"count":1,"note":7,"ref":""}',
    '{"count":1,"note":"a","ref":null}', '{"count":1,"note":"a","ref":"crm\\u0007"}',
    json.dumps({"count": 1, "note": "n" * (MAX_NOTE + 1), "ref": ""}),
    json.dumps({"count": 1, "note": "a", "ref": "r" * (MAX_REF + 1)}),
])
def test_anything_else_in_a_value_is_refused(value: Any) -> None:
    with pytest.raises(UsageError):
        parse_again(value)


def test_a_value_that_would_not_fit_a_button_is_not_made() -> None:
    with pytest.raises(ValueError, match="over a button value's 2000"):
        again_value(1, "\x07" * MAX_NOTE, "")  # each escaped to six characters


# --- the message ---------------------------------------------------------------------------

def record(rep: str, note: str, ref: str = "", *, used_after: timedelta | None = None,
           ago: timedelta = 2 * DAY) -> LinkRecord:
    issued = AT - ago
    return LinkRecord(issued_at=issued, requested_by=rep, customer_note=note, customer_ref=ref,
                      token_last4="ab12", status="VALID",
                      used_at=issued + used_after if used_after else None,
                      expires_at=issued + DAY)


def renew_values(message: dict[str, Any]) -> list[str]:
    return [block["accessory"]["value"] for block in blocks_of(message)
            if block.get("accessory", {}).get("action_id") == messages.RENEW_CUSTOMER_ACTION]


def test_the_digest_names_each_rep_their_counts_and_each_customer_with_a_renew_button() -> None:
    records = [record("U0ANA", "Used Co", used_after=timedelta(hours=2)),
               record("U0ANA", "Lapsed Co", "ACME Corp"),
               record("U0BEN", "ask for ref:9", ago=3 * DAY)]
    message = messages.digest(summarise(records, AT), AT - 7 * DAY, AT)
    assert_within_slack_limits(message)
    text = block_text(message)
    assert "Onboarding digest" in text and "3 links issued" in text
    assert ("<@U0ANA>: 2 issued, 1 turned USED, 1 expired unused; median time to USED "
            "2 h 0 min") in text
    assert "<@U0BEN>: 1 issued, 0 turned USED, 1 expired unused" in text
    assert "Lapsed Co (CRM ref ACME Corp), <@U0ANA>" in text
    assert [parse_again(v) for v in renew_values(message)] == [
        OnboardRequest(1, "Lapsed Co", "ACME Corp"), OnboardRequest(1, "ask for ref:9", "")]
    assert message["text"] == "Onboarding digest: 3 links issued, 2 customers to follow up"


def test_the_largest_digest_stays_within_slacks_limits_and_its_user_text_inert() -> None:
    """60 reps, each with a customer whose links lapsed, notes and references as long and
    hostile as they come: slack_sdk's own models accept each block; what does not fit is
    counted."""
    hostile = '<!channel> *bold* "quoted" <https://evil.example|click> &' * 20
    records = [record(f"U0REP{n:03d}", (hostile + str(n))[:MAX_NOTE],
                      (hostile + str(n))[:MAX_REF]) for n in range(60)]
    message = messages.digest(summarise(records, AT), AT - 7 * DAY, AT)
    assert_within_slack_limits(message)
    assert_inert(message, "<!channel>", "<https://evil.example")
    for block in blocks_of(message):
        parsed = Block.parse(block)
        assert parsed is not None and parsed.to_dict() == block
    values = renew_values(message)
    assert 1 <= len(values) <= messages.MAX_FOLLOW_UP
    assert all(len(v) <= MAX_BUTTON_VALUE for v in values)
    assert parse_again(values[0]) == OnboardRequest(1, (hostile + "0")[:MAX_NOTE],
                                                    (hostile + "0")[:MAX_REF])
    text = block_text(message)
    assert "…and 40 more reps" in text
    assert f"…and {60 - len(values)} more customers to follow up" in text
    # Short notes: every customer up to the limit gets its button.
    short = [record(f"U0REP{n:03d}", f"Customer {n}") for n in range(30)]
    plain = messages.digest(summarise(short, AT), AT - 7 * DAY, AT)
    assert_within_slack_limits(plain)
    assert len(renew_values(plain)) == messages.MAX_FOLLOW_UP
    assert "…and 10 more customers to follow up" in block_text(plain)


def test_a_customer_whose_value_would_not_fit_is_listed_without_a_button() -> None:
    records = [record("U0ANA", "\x07" * MAX_NOTE), record("U0ANA", "Plain Co")]
    message = messages.digest(summarise(records, AT), AT - 7 * DAY, AT)
    assert [parse_again(v).note for v in renew_values(message)] == ["Plain Co"]
    assert block_text(message).count(", <@U0ANA>") == 2


# --- the Renew button's listener -----------------------------------------------------------

def renew(value: Any, *, allowed: bool = True) -> tuple[Any, MagicMock]:
    core, ack = mock_core(allowed), MagicMock()
    renew_customer(ack=ack, body=click_body(), action={"value": value}, context=context(core))
    ack.assert_called_once_with()  # a button's ack carries nothing
    return core, ack


def test_renew_issues_one_link_for_the_customer_beside_the_digest() -> None:
    core, _ = renew(again_value(1, "Lapsed Co", "ACME Corp"))
    job, reply, requester, count, note, _batch, *flags = core.commands.enqueue.call_args.args
    assert (job, requester, count, note, flags) == (Job.ISSUE_LINKS, REP, 1, "Lapsed Co",
                                                    [False, True])
    assert reply.url == URL and reply.keep_original  # the digest stays as it was
    assert core.commands.enqueue.call_args.kwargs == {
        "idempotent": False, "job_kwargs": {"customer_ref": "ACME Corp"}}
    core.access.may_issue.assert_called_once_with("U0REP", "C0SALES")
    core.onboarding.existing.assert_called_once_with(REP, 1, "Lapsed Co", "ACME Corp")


def test_renew_for_a_customer_the_clicker_has_a_live_link_for_shows_that_link() -> None:
    core, ack = mock_core(), MagicMock()
    batch = MagicMock(customer_ref="ACME Corp", note="Lapsed Co", issued_at=AT,
                      expires_at=AT + DAY)
    core.onboarding.existing.return_value = (batch, [])
    renew_customer(ack=ack, body=click_body(), action={"value": again_value(1, "Lapsed Co")},
                   context=context(core))
    job, _reply, message = core.commands.enqueue.call_args.args
    assert job == Job.RESPOND
    assert message == linkviews.already_issued(batch, [], 1, "Lapsed Co", "")


def test_renew_by_someone_who_may_not_issue_is_refused_and_nothing_issued() -> None:
    core, _ = renew(again_value(1, "Lapsed Co"), allowed=False)
    job, _reply, message = core.commands.enqueue.call_args.args
    assert job == Job.RESPOND and REASON in message["text"]
    assert not core.onboarding.existing.called


@pytest.mark.parametrize("value", [None, "{", '{"count":1}', "list all", "x" * 2001])
def test_renew_with_a_malformed_value_answers_politely_before_anything_else(value: Any) -> None:
    core, _ = renew(value)
    assert core.commands.enqueue.call_args.args[2] == messages.unreadable_request()
    assert not core.access.may_issue.called and not core.onboarding.existing.called
    core.onboarding.refused.assert_called_once_with(REP, "issue", "invalid button value")


def test_issue_anyway_keeps_a_reference_with_spaces_and_a_note_with_a_ref_word() -> None:
    core, ack = mock_core(), MagicMock()
    value = again_value(2, "ask for ref:9 at the desk", "ACME Corp")
    issue_anyway(ack=ack, body=click_body(), action={"value": value}, context=context(core))
    job, _reply, requester, count, note, *_ = core.commands.enqueue.call_args.args
    assert (job, requester, count, note) == (Job.ISSUE_LINKS, REP, 2,
                                             "ask for ref:9 at the desk")
    assert core.commands.enqueue.call_args.kwargs["job_kwargs"] == {"customer_ref": "ACME Corp"}
