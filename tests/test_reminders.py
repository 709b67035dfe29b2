"""Expiry reminders, in-process: RQ's scheduler and a real worker on real Redis, time frozen."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory

from bot.core import Core
from bot.messages import RENEW_ACTION, SHARE_ACTION, STOP_ACTION
from bot.onboarding import IssueResult
from bot.sandbox import ExotelSandbox, Fault
from tests.conftest import REP, START, Bot, block_text, close_to, fire_due
from tests.fakes.slack import FakeSlack


def posts(slack: FakeSlack) -> list[dict[str, Any]]:
    return [call.params for call in slack.calls("chat.postMessage")]


def issue(core: Core, count: int = 2, note: str = "ACME Corp") -> IssueResult:
    result = core.onboarding.issue(REP, count, note)
    assert result.batch is not None and result.reminder_due is not None
    return result


def test_one_batch_gets_one_reminder_at_its_due_time(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    result = issue(core, 3, "ACME <!channel>")
    assert result.reminder_due == result.batch.expires_at - timedelta(hours=1)
    assert close_to(result.reminder_due, START + timedelta(hours=23))

    clock.move_to(result.reminder_due - timedelta(seconds=5))
    fire_due(core)
    assert posts(slack) == []

    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)
    fire_due(core)  # a second pass (another replica, a retry) sends nothing more
    [post] = posts(slack)
    assert post["channel"] == "C0SALES"
    text = json.dumps(post)
    assert "<@U0REP>" in text and "3 onboarding links" in text
    for link in result.links:
        assert link.token not in text  # full links stay with the requester
        assert link.token[-4:] in text
    assert "still usable" in text
    assert "<!channel>" not in block_text(post).replace("Customer note: ACME <!channel>", "")
    assert {e["action_id"] for b in post["blocks"] if b["type"] == "actions"
            for e in b["elements"]} == {RENEW_ACTION, STOP_ACTION}


def test_a_channel_that_refuses_gets_a_direct_message_instead(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    result = issue(core)
    slack.channel_errors["C0SALES"] = "not_in_channel"
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)
    assert [c.params["users"] for c in slack.calls("conversations.open")] == ["U0REP"]
    assert [p["channel"] for p in posts(slack)] == ["C0SALES", "DU0REP"]  # refused, then DM
    assert "<@U0REP>" in json.dumps(posts(slack)[-1])


def test_slack_rate_limits_are_waited_out_not_dropped(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    result = issue(core)
    slack.rate_limited["chat.postMessage"] = 2  # two 429s with Retry-After: 1, then OK
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)
    assert len(posts(slack)) == 3  # the same post, tried until Slack took it
    assert slack.rate_limited["chat.postMessage"] == 0


def test_no_reminder_when_every_link_is_used(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack, exotel: ExotelSandbox,
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    core = make_core()
    result = issue(core)
    for link in result.links:
        exotel.onboard(link.token, 5)
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)
    assert posts(slack) == []
    assert any("no link is still valid" in r.getMessage() for r in caplog.records)


def test_some_used_some_valid_shows_each(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    core = make_core()
    result = issue(core)
    exotel.onboard(result.links[0].token, 5)
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)
    text = json.dumps(posts(slack))
    assert "done (used by five customers)" in text and "still usable" in text


def test_exotel_unreachable_still_reminds_with_status_unknown(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    core = make_core(EXOTEL_DEADLINE=2, EXOTEL_TIMEOUT=1)
    result = issue(core)
    exotel.always = Fault(status=503)
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)
    [post] = posts(slack)
    assert json.dumps(post).count("status unknown") == 2


def test_a_late_reminder_says_how_late(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    result = issue(core)
    clock.move_to(result.reminder_due + timedelta(minutes=7, seconds=3))
    fire_due(core)
    assert "7 min late" in json.dumps(posts(slack))


def test_reminder_lead_is_read_when_scheduling(make_core, clock: FrozenDateTimeFactory) -> None:
    core = make_core(REMINDER_LEAD="86395")
    assert close_to(issue(core).reminder_due, START + timedelta(seconds=5))
    core = make_core(REMINDER_LEAD="PT30M")
    assert close_to(issue(core).reminder_due, START + timedelta(hours=23, minutes=30))


def test_renew_clicked_twice_makes_one_new_batch(
    make_core, make_bot: Callable[..., Bot], exotel: ExotelSandbox, redis_client
) -> None:
    core = make_core()
    batch = issue(core, 2, "ACME Corp").batch
    bot = make_bot()
    first = bot.click(RENEW_ACTION, batch.batch_id, user_id="U0AM")
    second = bot.click(RENEW_ACTION, batch.batch_id, user_id="U0AM")
    assert first.http.status_code == second.http.status_code == 200
    replies = [block_text(first.final()), block_text(second.final())]
    assert sum("2 WhatsApp onboarding links" in r for r in replies) == 1
    assert sum("Already renewing" in r for r in replies) == 1
    assert len(exotel.calls_of("POST")) == 4  # two for the batch, two for its renewal
    assert len(redis_client.keys("onboard:batch:*")) == 2
    renewed = next(json.loads(redis_client.get(k)) for k in redis_client.keys("onboard:batch:*")
                   if k != f"onboard:batch:{batch.batch_id}")
    assert renewed["requester"]["user_id"] == "U0AM" and renewed["note"] == "ACME Corp"


def test_stop_reminding_means_nothing_at_the_due_time(
    make_core, make_bot: Callable[..., Bot], clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    result = issue(core)
    reply = make_bot().click(STOP_ACTION, result.batch.batch_id)
    assert "No more reminders" in block_text(reply.final())
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)
    assert posts(slack) == []


def test_the_links_reply_offers_stop_reminding_and_says_when(bot: Bot) -> None:
    final = bot.command("/onboard-link", "2 ACME").final()
    text = block_text(final)
    assert "Reminder in this channel" in text
    actions = [e for b in final["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [a["action_id"] for a in actions] == [SHARE_ACTION, STOP_ACTION]
