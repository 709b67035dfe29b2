"""Expiry reminders, in-process: RQ's scheduler and a real worker on real Redis, time frozen."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from rq.registry import ScheduledJobRegistry

from bot.domain import reminders
from bot.domain.onboarding import IssueResult
from bot.domain.reminders import job_id
from bot.exotel.sandbox import ExotelSandbox, Fault
from bot.slack.core import Core
from bot.slack.messages import RENEW_ACTION, SHARE_ACTION, STOP_ACTION
from testkit.slack import FakeSlack
from tests.blockkit import block_text
from tests.support import REP, START, Bot, close_to, fire_due


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


def test_the_reminder_names_the_customers_crm_reference(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    result = core.onboarding.issue(REP, 1, "ACME Corp", customer_ref="hubspot_12345 <!here>")
    assert result.reminder_due is not None
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)
    [post] = posts(slack)
    [context] = [b for b in post["blocks"] if b["type"] == "context"
                 and "Customer note" in json.dumps(b)]
    assert [(e["type"], e["text"]) for e in context["elements"]] == [
        ("plain_text", "Customer note: ACME Corp"),
        ("plain_text", "CRM reference: hubspot_12345 <!here>")]  # as typed, and inert
    assert "<!here>" not in post["text"]


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


def test_a_rate_limited_reminder_comes_back_after_retry_after(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    result = issue(core)
    slack.rate_limited["chat.postMessage"] = 2  # two 429s with Retry-After: 1, then OK
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)
    assert len(posts(slack)) == 1  # the 429: not waited out inside the job
    for _ in range(2):
        clock.tick(timedelta(seconds=2))
        fire_due(core)
    assert len(posts(slack)) == 3  # the same post, tried until Slack took it
    assert slack.rate_limited["chat.postMessage"] == 0
    fire_due(core)
    assert len(posts(slack)) == 3 and scheduled(core) == {}


def scheduled(core: Core) -> dict[str, datetime]:
    """Reminders waiting, by the id of the job each becomes, and when each is due: those in
    the reminders' sorted set, and those put back after a 429 in RQ's scheduled registry."""
    registry = ScheduledJobRegistry(queue=core.reminders.queue)
    waiting = {job_id(str(batch_id)): datetime.fromtimestamp(score, UTC) for batch_id, score
               in core.reminders.redis.zrange(reminders.DUE_KEY, 0, -1, withscores=True)}
    return waiting | {job: registry.get_scheduled_time(job) for job in registry.get_job_ids()}


def test_a_429_for_one_channel_does_not_hold_back_another_channels_reminder(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    """Acceptance 6: Retry-After 60 for channel A; B's reminder, due meanwhile, goes out."""
    core = make_core()
    first = issue(core, 1, "Channel A")
    clock.tick(timedelta(seconds=10))
    second = core.onboarding.issue(REP.model_copy(update={"channel_id": "C0OTHER"}), 1,
                                   "Channel B")
    slack.channel_retry_after["C0SALES"] = 60

    clock.move_to(first.reminder_due + timedelta(seconds=1))
    fire_due(core)  # A: 429, put back
    waiting = scheduled(core)
    assert close_to(waiting.pop(job_id(second.batch.batch_id)), second.reminder_due)
    [(again, when)] = waiting.items()
    assert again.startswith(job_id(first.batch.batch_id))
    assert close_to(when, first.reminder_due + timedelta(seconds=61))

    clock.move_to(second.reminder_due + timedelta(seconds=1))
    fire_due(core)  # B, at its due time: A's wait holds nobody
    assert [p["channel"] for p in posts(slack)] == ["C0SALES", "C0OTHER"]
    assert "Channel B" in json.dumps(posts(slack)[-1])

    del slack.channel_retry_after["C0SALES"]
    clock.move_to(first.reminder_due + timedelta(seconds=62))
    fire_due(core)
    assert [p["channel"] for p in posts(slack)] == ["C0SALES", "C0OTHER", "C0SALES"]
    assert sent_to(slack, first.batch.batch_id) == ["C0SALES"]  # once, the 429 posted nothing
    assert scheduled(core) == {}


def sent_to(slack: FakeSlack, batch_id: str) -> list[str]:
    """The conversations holding a reminder of this batch (by its metadata), one per post."""
    return [channel for channel, messages in slack.messages.items() for m in messages
            if (m.get("metadata") or {}).get("event_payload", {}).get("batch_id") == batch_id]


def test_each_reminder_names_its_batch_in_message_metadata(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    result = issue(core)
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)
    [post] = posts(slack)
    assert post["metadata"] == {"event_type": "onboard_reminder",
                                "event_payload": {"batch_id": result.batch.batch_id}}


def test_a_post_that_timed_out_but_reached_slack_is_not_posted_again(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack, caplog
) -> None:
    caplog.set_level(logging.INFO)
    core = make_core()
    result = issue(core)
    core.reminder_sender.delivery.slack.timeout = 1
    slack.channel_delays["C0SALES"] = 3  # Slack posts it, then answers too late
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)  # the job fails: it cannot know whether the post went out
    assert sent_to(slack, result.batch.batch_id) == ["C0SALES"]

    slack.channel_delays.clear()
    after_first_retry(clock)
    fire_due(core)  # RQ's retry: looks in the channel's history first
    fire_due(core)
    assert sent_to(slack, result.batch.batch_id) == ["C0SALES"]
    assert [c.params["channel"] for c in slack.calls("conversations.history")] == ["C0SALES"]
    assert slack.calls("conversations.history")[0].params["include_all_metadata"] in ("1", "true")
    assert "already posted to C0SALES (found in its history)" in caplog.text


def after_first_retry(clock: FrozenDateTimeFactory) -> None:
    """Past RQ's first retry of a job that failed just now. From now: freezegun's tick
    adds to where the clock was last moved, losing the real seconds the failed job took."""
    clock.move_to(datetime.now(UTC) + timedelta(seconds=reminders.RETRY_SECONDS[0] + 1))


def plant_unfinished_claim(core: Core, batch_id: str, where: list[str]) -> None:
    """What a worker killed mid-post leaves: a claim, lapsed, saying where it was posting."""
    moment = datetime.now(UTC)
    claim = reminders.Claim(moment - timedelta(seconds=50), moment - timedelta(seconds=5), where)
    core.reminders.redis.set(reminders.CLAIM_KEY.format(batch_id), claim.dump(), ex=3600)


def test_where_history_cannot_be_read_the_reminder_is_posted_again(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack, caplog
) -> None:
    core = make_core()
    result = issue(core)
    batch_id = result.batch.batch_id
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    core.reminder_sender.delivery.slack.chat_postMessage(  # the dead worker's post
        channel="C0SALES", text="x", metadata={"event_type": "onboard_reminder",
                                               "event_payload": {"batch_id": batch_id}})
    plant_unfinished_claim(core, batch_id, ["C0SALES"])
    slack.history_errors["C0SALES"] = "missing_scope"
    fire_due(core)
    assert sent_to(slack, batch_id) == ["C0SALES", "C0SALES"]  # at least once beats never
    assert "cannot read C0SALES" in caplog.text and "missing_scope" in caplog.text


def test_an_unfinished_claim_with_nothing_in_history_posts_once(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    result = issue(core)
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    plant_unfinished_claim(core, result.batch.batch_id, ["C0SALES"])
    fire_due(core)
    fire_due(core)
    assert sent_to(slack, result.batch.batch_id) == ["C0SALES"]
    assert len(slack.calls("conversations.history")) == 1


def test_a_fresh_claim_of_another_worker_is_left_alone(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    result = issue(core)
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    batch = result.batch
    assert core.reminders.claim(batch) is not None  # another worker, sending right now
    with pytest.raises(reminders.ReminderBusy):
        core.reminder_sender.send(batch.batch_id, result.reminder_due)
    assert posts(slack) == [] and slack.calls("conversations.history") == []


def test_the_dm_a_reminder_went_to_is_looked_in_too(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    result = issue(core)
    slack.channel_errors["C0SALES"] = "not_in_channel"
    core.reminder_sender.delivery.slack.timeout = 1
    slack.channel_delays["DU0REP"] = 3  # the DM is posted, the answer comes too late
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)
    assert sent_to(slack, result.batch.batch_id) == ["DU0REP"]

    slack.channel_delays.clear()
    after_first_retry(clock)
    fire_due(core)
    assert sent_to(slack, result.batch.batch_id) == ["DU0REP"]
    assert [c.params["channel"] for c in slack.calls("conversations.history")] == [
        "C0SALES", "DU0REP"]


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
    assert "USED: a customer finished onboarding" in text and "still usable" in text


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


def due_entries(core: Core) -> dict[str, float]:
    """The reminders' sorted set: batch id -> when due (a Unix timestamp)."""
    return dict(core.reminders.redis.zrange(reminders.DUE_KEY, 0, -1, withscores=True))


def test_a_scheduled_reminder_is_one_set_entry_and_no_job_until_due(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    result = issue(core)
    batch_id = result.batch.batch_id
    core.reminders.schedule(result.batch)  # again (a command accounted for): still one
    assert due_entries(core) == {batch_id: pytest.approx(result.reminder_due.timestamp())}
    jobs = core.reminders.queue
    assert not jobs.connection.exists(f"rq:job:{job_id(batch_id)}")
    assert (jobs.count, ScheduledJobRegistry(queue=jobs).count) == (0, 0)

    clock.move_to(result.reminder_due - timedelta(seconds=5))
    assert core.reminders.release_due() == 0 and batch_id in due_entries(core)

    clock.move_to(result.reminder_due + timedelta(seconds=1))
    assert core.reminders.release_due() == 1 and due_entries(core) == {}
    job = jobs.fetch_job(job_id(batch_id))
    assert job is not None and job.args == (batch_id, result.reminder_due.isoformat())
    assert (job.timeout, job.result_ttl, job.retries_left) == (
        reminders.JOB_TIMEOUT, 0, len(reminders.RETRY_SECONDS))
    # A second holder that read the entry before the first removed it releases it again.
    core.reminders.redis.zadd(reminders.DUE_KEY, {batch_id: result.reminder_due.timestamp()})
    assert core.reminders.release_due() == 1
    fire_due(core)
    assert sent_to(slack, batch_id) == ["C0SALES"]  # once: the claim
    assert due_entries(core) == {} and jobs.count == 0


def test_an_entry_leaves_the_set_only_with_its_job_enqueued(
    make_core, clock: FrozenDateTimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = make_core()
    result = issue(core)
    clock.move_to(result.reminder_due + timedelta(seconds=1))

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("died while enqueueing")

    monkeypatch.setattr(core.reminders.queue, "enqueue_call", broken)
    with pytest.raises(RuntimeError):
        core.reminders.release_due()
    assert result.batch.batch_id in due_entries(core)  # the ZREM went with the transaction
    monkeypatch.undo()
    assert core.reminders.release_due() == 1 and due_entries(core) == {}


def test_stopping_or_forgetting_a_batch_takes_its_entry_out(
    make_core, clock: FrozenDateTimeFactory, slack: FakeSlack
) -> None:
    core = make_core()
    stopped, forgotten, kept = issue(core), issue(core, 1, "Other"), issue(core, 1, "Kept")
    core.onboarding.stop_reminders(REP, stopped.batch.batch_id)
    core.onboarding.forget(REP, batch_id=forgotten.batch.batch_id)
    assert list(due_entries(core)) == [kept.batch.batch_id]

    clock.move_to(kept.reminder_due + timedelta(seconds=1))
    fire_due(core)
    assert [sent_to(slack, r.batch.batch_id) for r in (stopped, forgotten, kept)] == [
        [], [], ["C0SALES"]]
    assert due_entries(core) == {}
