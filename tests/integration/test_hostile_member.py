"""A hostile workspace member (issue 13): other people's buttons, made-up button values, the
Exotel budget spent by checks, slow user-group look-ups, and an audit that records it all."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import redis
from freezegun.api import FrozenDateTimeFactory

from bot.cli import audit_export
from bot.domain.audit import STREAM
from bot.domain.models import Requester
from bot.domain.ratelimit import SharedRateLimiter
from bot.exotel.client import ExotelNotFound, ExotelRateLimited, RateLimitExceeded
from bot.exotel.sandbox import ExotelSandbox, Fault
from bot.settings import HINTS, SettingsError
from bot.slack.core import Core
from bot.slack.groups import FAILED_KEY, MEMBERS_KEY
from bot.slack.messages import FORGET_ACTION, RENEW_ACTION, SHARE_ACTION, STOP_ACTION
from testkit.slack import FakeSlack
from testkit.wait import wait_until
from tests.blockkit import block_text
from tests.support import REP, Bot, fire_due, settings_for

UNKNOWN_TOKEN = "never-issued-token-0001"


def audit_entries(client: redis.Redis) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(STREAM)]


def batch_of(final: dict) -> str:
    return next(e["value"] for b in final["blocks"] if b["type"] == "actions"
                for e in b["elements"])


def reminders_of(slack: FakeSlack, batch_id: str) -> list[dict]:
    return [m for ms in slack.messages.values() for m in ms
            if (m.get("metadata") or {}).get("event_payload", {}).get("batch_id") == batch_id]


# Acceptance 5 -----------------------------------------------------------------------------

def test_another_users_buttons_on_a_reps_batch_are_refused_and_audited_under_the_clicker(
    make_bot: Callable[..., Bot], clock: FrozenDateTimeFactory, slack: FakeSlack,
    redis_client: redis.Redis
) -> None:
    bot = make_bot(ALLOWED_USER_IDS="U0REP,U0PEER", ADMIN_USER_IDS="U0ADMIN",
                   REMINDER_LEAD="86395")
    final = bot.command("/onboard-link", "2 ACME").final()
    batch_id = batch_of(final)
    assert "Stop reminding" in json.dumps(final)

    for clicker in ("U0PEER", "U0OUT"):  # allowed to issue but not the requester; outsider
        for action in (STOP_ACTION, FORGET_ACTION, SHARE_ACTION):
            text = block_text(bot.click(action, batch_id, user_id=clicker).final())
            assert ("Only the person who issued" in text if clicker == "U0PEER"
                    else "not on the list" in text), (clicker, action, text)
    assert slack.calls("chat.postMessage") == []  # nothing shared
    assert redis_client.exists(f"onboard:batch:{batch_id}")  # nothing forgotten

    clock.tick(timedelta(seconds=6))  # the reminder is due 5 s after issue
    core = bot.core
    wait_until(lambda: fire_due(core) or reminders_of(slack, batch_id), 20,
               "the rep's reminder posted")
    [post] = [call.params for call in slack.calls("chat.postMessage")]
    assert post["channel"] == "C0SALES" and "<@U0REP>, your 2 onboarding links" in json.dumps(post)

    refusals = [(e["user_id"], e["action"]) for e in audit_entries(redis_client)
                if e["outcome"] == "refused"]
    expected = [(user, action) for user in ("U0PEER", "U0OUT")
                for action in ("stop_reminders", "forget", "share")]
    assert sorted(refusals) == sorted(expected)
    assert all(e["user_id"] != "U0REP" for e in audit_entries(redis_client)
               if e["outcome"] == "refused")


def test_the_requester_and_an_admin_may_use_the_buttons(
    make_bot: Callable[..., Bot], slack: FakeSlack
) -> None:
    bot = make_bot(ALLOWED_USER_IDS="U0REP", ADMIN_USER_IDS="U0ADMIN")
    batch_id = batch_of(bot.command("/onboard-link", "1 ACME").final())
    other_id = batch_of(bot.command("/onboard-link", "1 Globex").final())
    assert "Posted the links" in block_text(
        bot.click(SHARE_ACTION, batch_id, user_id="U0ADMIN").final())
    assert "No more reminders" in block_text(bot.click(STOP_ACTION, batch_id).final())
    assert "no longer tracks" in block_text(
        bot.click(FORGET_ACTION, other_id, user_id="U0ADMIN").final())


@pytest.mark.parametrize("value", ["x" * 100_000, "../../onboard:audit", "A" * 32,
                                   "0123456789abcdef0123456789abcdef\n", ""],
                         ids=["100kB", "path", "upper", "newline", "empty"])
def test_made_up_button_values_are_refused_before_any_redis_key_is_built(
    bot: Bot, redis_client: redis.Redis, value: str
) -> None:
    for action in (STOP_ACTION, FORGET_ACTION, SHARE_ACTION, RENEW_ACTION):
        reply = bot.click(action, value, user_id="U0OUT")
        assert "doesn't belong to a batch" in block_text(reply.final())
    assert all(len(key) < 100 for key in redis_client.scan_iter(count=1000))
    entries = audit_entries(redis_client)
    assert [(e["action"], e["outcome"], e["user_id"]) for e in entries] == [
        (name, "refused", "U0OUT") for name in ("stop_reminders", "forget", "share", "renew")]
    assert all(e["detail"] == "invalid button value" and e["batch_id"] == "" for e in entries)


# Acceptance 7 -----------------------------------------------------------------------------

def test_200_checks_from_a_member_not_allowed_to_issue_leave_a_reps_5_links(
    make_bot: Callable[..., Bot], exotel: ExotelSandbox, redis_client: redis.Redis
) -> None:
    bot = make_bot(EXOTEL_RATE_PER_MINUTE=200, ALLOWED_USER_IDS="U0REP")
    replies = [bot.command("/check-token", f"{UNKNOWN_TOKEN}-{n}", user_id="U0OUT")
               for n in range(200)]
    asked = [r for r in replies if "Asking Exotel" in block_text(r.ack)]
    limited = [r for r in replies if "at most 30 tokens a minute" in block_text(r.ack)]
    assert (len(asked), len(limited)) == (30, 170)
    for reply in asked:
        assert "does not know this token" in block_text(reply.final())

    final = bot.command("/onboard-link", "5 ACME").final()
    assert "5 WhatsApp" in block_text(final), block_text(final)
    assert len(exotel.calls_of("GET")) == 30 and len(exotel.calls_of("POST")) == 5

    outcomes = [(e["action"], e["outcome"]) for e in audit_entries(redis_client)
                if e["user_id"] == "U0OUT"]
    assert sorted(set(outcomes)) == [("check", "unknown"), ("check-token", "rate-limited")]
    assert len(outcomes) == 200  # every one of the 200 is on record


def test_checks_never_take_the_share_of_the_budget_kept_for_issuing(
    make_core: Callable[..., Core], exotel: ExotelSandbox, redis_client: redis.Redis
) -> None:
    core = make_core(EXOTEL_RATE_PER_MINUTE=200, ISSUE_RESERVE="0.5")
    refused = unknown = 0
    for n in range(150):  # many members, each under their own limit
        member = Requester(team_id="T0FAKE", user_id=f"U{n:04d}", channel_id="C0X")
        try:
            core.onboarding.check(member, f"{UNKNOWN_TOKEN}-{n}")
        except ExotelRateLimited:
            refused += 1
        except ExotelNotFound:  # made-up tokens: what a member spending the budget sends
            unknown += 1
    assert (len(exotel.calls_of("GET")), unknown, refused) == (100, 100, 50)

    for _ in range(2):  # the other 100 of the minute are issuing's
        assert len(core.onboarding.issue(REP, 50, "ACME").links) == 50
    assert len(exotel.calls_of("POST")) == 100
    outcomes = [e["outcome"] for e in audit_entries(redis_client) if e["action"] == "check"]
    assert outcomes.count("unknown") == 100 and outcomes.count("rate-limited") == 50


def test_the_reserve_is_kept_in_the_same_window_as_issuing(redis_client: redis.Redis) -> None:
    limiter = SharedRateLimiter(redis_client, per_minute=10, key="exotel:reserve", reserve=4)
    soon = time.monotonic() + 5
    others = limiter.non_issuing()
    for _ in range(6):
        others.acquire(soon)
    with pytest.raises(RateLimitExceeded):
        others.acquire(soon)  # 4 free: all of them issuing's
    assert limiter.wait_for(4) == 0.0 and limiter.wait_for(5) > 50
    for _ in range(4):
        limiter.acquire(soon)
    with pytest.raises(RateLimitExceeded):
        limiter.acquire(soon)
    with pytest.raises(ValueError):
        SharedRateLimiter(redis_client, per_minute=10, key="exotel:x", reserve=10)


# Acceptance 10 ----------------------------------------------------------------------------

@pytest.mark.slow  # waits out a user group answering in 2 s
def test_a_slow_user_group_is_looked_up_off_the_ack_and_a_failure_is_not_repeated(
    make_bot: Callable[..., Bot], slack: FakeSlack, redis_client: redis.Redis
) -> None:
    slack.usergroups["S0SALES"] = ["U0GROUP"]
    slack.delays["usergroups.users.list"] = 2.0
    bot = make_bot(ALLOWED_USERGROUP_IDS="S0SALES", ADMIN_USER_IDS="U0ADMIN")

    first = bot.command("/onboard-link", "1 ACME", user_id="U0GROUP")
    # Slack would have said "a member" after 2 s: the ack gave up at its own 1 s deadline.
    assert "couldn't confirm your user group membership" in block_text(first.ack)
    refused = bot.command("/onboard-link", "1 ACME", user_id="U0OUT")
    assert "ACME" not in block_text(refused.ack) and "Working" not in block_text(refused.ack)

    wait_until(lambda: redis_client.exists(MEMBERS_KEY.format("S0SALES")), 20,
               "the group refreshed in the background")
    assert not redis_client.exists(FAILED_KEY.format("S0SALES"))
    # One look-up in the first ack, one by the worker: none by the refused command.
    assert len(slack.calls("usergroups.users.list")) == 2

    allowed = bot.command("/onboard-link", "1 ACME", user_id="U0GROUP")
    assert "couldn't confirm" not in block_text(allowed.ack)
    assert "1 WhatsApp" in block_text(allowed.final())
    assert len(slack.calls("usergroups.users.list")) == 2  # from the cache: no wait at all


def test_membership_is_shared_by_processes_and_refreshed_when_stale(
    make_core: Callable[..., Core], slack: FakeSlack, redis_client: redis.Redis
) -> None:
    slack.usergroups["S0SALES"] = ["U0GROUP"]
    one = make_core(ALLOWED_USERGROUP_IDS="S0SALES")
    two = make_core(ALLOWED_USERGROUP_IDS="S0SALES")  # another web process
    assert one.access.may_issue("U0GROUP", "C0X").allowed
    assert two.access.may_issue("U0GROUP", "C0X").allowed
    assert not two.access.may_issue("U0OUT", "C0X").allowed
    assert len(slack.calls("usergroups.users.list")) == 1

    key = MEMBERS_KEY.format("S0SALES")
    record = json.loads(redis_client.get(key))
    redis_client.set(key, json.dumps({**record, "at": record["at"] - 600}), ex=3600)
    slack.usergroups["S0SALES"] = ["U0GROUP", "U0NEW"]
    assert not one.access.may_issue("U0NEW", "C0X").allowed  # stale, used, refresh queued
    assert len(one.commands.queue) == 1
    fire_due(one)
    assert one.access.may_issue("U0NEW", "C0X").allowed
    assert len(slack.calls("usergroups.users.list")) == 2


# Acceptance 9 -----------------------------------------------------------------------------

def test_the_audit_shows_quota_and_access_refusals_and_a_check_of_an_unknown_token(
    make_bot: Callable[..., Bot], redis_client: redis.Redis, exotel: ExotelSandbox,
    capsys: pytest.CaptureFixture[str]
) -> None:
    bot = make_bot(ALLOWED_USER_IDS="U0REP", MAX_LINKS_PER_USER_PER_DAY=2)
    assert "at most 2 links" in block_text(bot.command("/onboard-link", "3 ACME").final())
    assert "not on the list" in block_text(
        bot.command("/onboard-link", "1", user_id="U0OUT").ack)
    assert "does not know" in block_text(bot.command("/check-token", UNKNOWN_TOKEN).final())
    exotel.always = Fault(status=402)  # Exotel refuses: the check failed, and says so
    assert "HTTP 402" in block_text(bot.command("/check-token", UNKNOWN_TOKEN).final())

    assert audit_export.run(bot.core.settings, None, "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["action"], r["outcome"], r["user_id"]) for r in rows] == [
        ("issue", "quota", "U0REP"), ("onboard-link", "refused", "U0OUT"),
        ("check", "unknown", "U0REP"), ("check", "failed", "U0REP")]
    assert rows[3]["detail"] == "ExotelPlanError"
    assert rows[2]["tokens"] == f"…{UNKNOWN_TOKEN[-4:]}"
    assert UNKNOWN_TOKEN not in json.dumps(rows)


# Settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), [("CHECK_TOKEN_PER_MINUTE", "0"),
                                             ("ISSUE_RESERVE", "1"), ("ISSUE_RESERVE", "-0.1")])
def test_the_fair_use_settings_are_checked_with_a_hint(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack, name: str, value: str
) -> None:
    with pytest.raises(SettingsError) as problem:
        settings_for(redis_url, exotel, slack, **{name: value})
    assert f"- {name}: " in str(problem.value) and HINTS[name] in str(problem.value)
    defaults = settings_for(redis_url, exotel, slack, EXOTEL_RATE_PER_MINUTE=200)
    assert (defaults.check_token_per_minute, defaults.issue_reserve_slots) == (30, 100)


def test_a_group_slack_does_not_know_is_refused_without_repeating_the_look_up(
    make_core: Callable[..., Core], slack: FakeSlack, redis_client: redis.Redis
) -> None:
    core = make_core(ALLOWED_USERGROUP_IDS="S0GONE")
    for _ in range(3):
        decision = core.access.may_issue("U0ANY", "C0X")
        assert not decision.allowed and "couldn't confirm" in decision.reason
    assert len(slack.calls("usergroups.users.list")) == 1
    assert 0 < redis_client.ttl(FAILED_KEY.format("S0GONE")) <= 30
    assert len(core.commands.queue) == 1  # one refresh queued for the worker, not three
