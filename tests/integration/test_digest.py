"""The managers' digest in-process, on real Redis and the fake Slack, time frozen: released
once per tick by whichever scheduler holds the lock (two at once, a handover, a bot down
over several ticks), posted once by its job, and its Renew button issuing a link."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from freezegun.api import FrozenDateTimeFactory
from rq import Queue

from bot.domain.digest import CLAIM_SECONDS, DigestBusy, Digests, job_id
from bot.domain.store import DIGEST_POSTED_KEY, DIGEST_RELEASED_KEY, now
from bot.runtime import jobs
from bot.runtime.scheduler import RENEW_SECONDS, Scheduler
from bot.runtime.worker import due_sources
from bot.slack.command_text import OnboardRequest, parse_again
from bot.slack.core import Core
from bot.slack.messages import RENEW_CUSTOMER_ACTION
from testkit.slack import FakeSlack
from tests.blockkit import LINK, assert_within_slack_limits, block_text, blocks_of
from tests.support import REP, START, Bot, fire_due

CHANNEL = "C0DIGEST"
HOURLY = {"DIGEST_CHANNEL": CHANNEL, "DIGEST_CRON": "0 * * * *"}
HOUR = timedelta(hours=1)


def digests_posted(slack: FakeSlack) -> list[dict[str, Any]]:
    return [c.params for c in slack.calls("chat.postMessage") if c.params["channel"] == CHANNEL]


def digest_jobs(queue: Queue) -> list[str]:
    return sorted(i for i in queue.get_job_ids() if i.startswith("digest-"))


def seed(core: Core) -> None:
    """A link turned USED after 2 h and one for ACME Corp never used, both by U0REP."""
    used = core.onboarding.issue(REP, 1, "Used Co")
    core.onboarding.issue(REP, 1, "Lapsed Co", customer_ref="ACME Corp")
    [link] = used.links
    core.history.used(link, link.issued_at + 2 * HOUR)


def test_two_schedulers_release_one_digest_job_per_tick_across_a_handover(
        make_core: Callable[..., Core], clock: FrozenDateTimeFactory,
        redis_client: redis.Redis) -> None:
    first, second = make_core(**HOURLY), make_core(**HOURLY)
    queue = first.reminders.queue
    ticking = [0.0]  # the schedulers' monotonic clock, moved by hand
    a = Scheduler(first.queues, queue.connection, due_sources(first), lambda: ticking[0])
    b = Scheduler(second.queues, second.reminders.queue.connection, due_sources(second),
                  lambda: ticking[0])

    a.tick()  # takes the lock: the latest tick (START, on the hour) is released
    b.tick()  # not holding: nothing
    assert a.holding and not b.holding
    assert digest_jobs(queue) == [job_id(START)]
    job = queue.fetch_job(job_id(START))
    assert job is not None and job.args == (START.isoformat(),
                                            (START - timedelta(days=7)).isoformat())

    a.release()  # a graceful handover
    clock.tick(HOUR)
    ticking[0] += RENEW_SECONDS
    b.tick()
    assert b.holding
    assert digest_jobs(queue) == sorted([job_id(START), job_id(START + HOUR)])
    job = queue.fetch_job(job_id(START + HOUR))
    assert job is not None and job.args == ((START + HOUR).isoformat(), START.isoformat())
    assert first.digests is not None and first.digests.release_due() == 0  # a stale holder

    # Two holders for an instant (a lapsed lock's and the next), each new to the tick: one
    # release among them all.
    clock.tick(HOUR)
    callers = [Digests(redis_client, queue, "bot.runtime.jobs.send_digest", "0 * * * *",
                       first.settings.digest_zone, timedelta(days=90)) for _ in range(8)]
    start = threading.Barrier(len(callers))
    released: list[int] = []

    def call(digests: Digests) -> None:
        start.wait()
        released.append(digests.release_due())

    threads = [threading.Thread(target=call, args=(d,)) for d in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(released) == 1
    assert len(digest_jobs(queue)) == 3
    # Every key the digest wrote lapses.
    assert 0 < redis_client.ttl(DIGEST_RELEASED_KEY) <= 91 * 24 * 3600  # the retention, and a tick


def test_the_digest_names_each_rep_the_counts_and_the_customer_to_follow_up(
        make_core: Callable[..., Core], clock: FrozenDateTimeFactory, slack: FakeSlack,
        redis_client: redis.Redis) -> None:
    core = make_core(**HOURLY)
    old = core.onboarding.issue(REP, 1, "Old Co")  # 8 days before: not in the first week
    assert old.links
    clock.tick(timedelta(days=8))
    seed(core)
    fire_due(core)  # the tick just passed: no link issued in the week before it
    assert digests_posted(slack) == []
    clock.tick(25 * HOUR)  # the lapsed link's 24 hours are over

    fire_due(core)
    fire_due(core)  # again (another host, a retry): nothing more

    [post] = digests_posted(slack)
    assert_within_slack_limits(post)
    text = block_text(post)
    assert "2 links issued" in text and "Old Co" not in text
    assert ("<@U0REP>: 2 issued, 1 turned USED, 1 expired unused; median time to USED "
            "2 h 0 min") in text
    assert "Lapsed Co (CRM ref ACME Corp), <@U0REP>" in text
    [value] = [b["accessory"]["value"] for b in blocks_of(post)
               if b.get("accessory", {}).get("action_id") == RENEW_CUSTOMER_ACTION]
    assert parse_again(value) == OnboardRequest(1, "Lapsed Co", "ACME Corp")
    assert post["metadata"]["event_type"] == "onboard_digest"
    tick = post["metadata"]["event_payload"]["tick"]
    key = DIGEST_POSTED_KEY.format(int(datetime.fromisoformat(tick).timestamp()))
    assert redis_client.get(key) == "posted" and 0 < redis_client.ttl(key) <= 24 * 3600


def test_a_bot_down_over_several_ticks_posts_one_digest_since_the_last(
        make_core: Callable[..., Core], clock: FrozenDateTimeFactory,
        slack: FakeSlack) -> None:
    core = make_core(**HOURLY)
    seed(core)
    clock.tick(HOUR)
    fire_due(core)
    assert len(digests_posted(slack)) == 1

    clock.tick(HOUR)
    fire_due(core)  # an hour with no link issued: nothing posted
    assert len(digests_posted(slack)) == 1

    core.onboarding.issue(REP, 1, "While Down Co")
    clock.tick(5 * HOUR)  # every process down over five ticks
    fire_due(core)
    fire_due(core)
    posts = digests_posted(slack)
    assert len(posts) == 2  # once, for the latest tick
    text = block_text(posts[1])
    assert "1 link issued" in text and "<@U0REP>: 1 issued" in text
    assert "Used Co" not in text  # in the last digest's period, not this one's


def test_the_digest_job_posts_once_however_often_it_runs(
        make_core: Callable[..., Core], clock: FrozenDateTimeFactory, slack: FakeSlack,
        redis_client: redis.Redis) -> None:
    core = make_core(**HOURLY)
    seed(core)
    tick, since = now() + HOUR, now() - HOUR
    assert core.digests is not None

    core.digests.claim(tick)  # another worker is posting it
    with pytest.raises(DigestBusy):
        jobs.send_digest(tick.isoformat(), since.isoformat())
    assert digests_posted(slack) == []

    # ... and died: its claim lapses after CLAIM_SECONDS (on Redis's clock, not the frozen one).
    claim = DIGEST_POSTED_KEY.format(int(tick.timestamp()))
    assert 0 < redis_client.ttl(claim) <= CLAIM_SECONDS
    redis_client.delete(claim)
    assert "posted in C0DIGEST" in jobs.send_digest(tick.isoformat(), since.isoformat())
    assert "already posted" in jobs.send_digest(tick.isoformat(), since.isoformat())
    assert len(digests_posted(slack)) == 1

    # A channel that refuses (the bot not in it): said, and not tried again.
    slack.errors["chat.postMessage"] = "not_in_channel"
    later = tick + HOUR
    assert "not posted in C0DIGEST: not_in_channel" in jobs.send_digest(
        later.isoformat(), since.isoformat())
    assert core.digests.claim(later) == "done"


def test_renew_in_the_digest_issues_one_link_for_that_customer_to_whoever_clicks(
        make_bot: Callable[..., Bot], clock: FrozenDateTimeFactory, slack: FakeSlack) -> None:
    bot = make_bot(**HOURLY)
    seed(bot.core)
    clock.tick(25 * HOUR)
    fire_due(bot.core)
    [post] = digests_posted(slack)
    value = next(b["accessory"]["value"] for b in blocks_of(post)
                 if b.get("accessory", {}).get("action_id") == RENEW_CUSTOMER_ACTION)

    reply = bot.click(RENEW_CUSTOMER_ACTION, value, user_id="U0PEER", channel_id=CHANNEL)
    assert reply.http.status_code == 200
    final = reply.final()
    assert final["replace_original"] is False  # the digest stays for the others
    text = block_text(final)
    assert len(LINK.findall(text)) == 1
    assert "Customer note: Lapsed Co" in text and "CRM reference: ACME Corp" in text
    [record] = bot.core.history.period(REP.team_id, "U0PEER", now() - HOUR)
    assert (record.customer_note, record.customer_ref) == ("Lapsed Co", "ACME Corp")

    again = bot.click(RENEW_CUSTOMER_ACTION, value, user_id="U0PEER", channel_id=CHANNEL)
    assert "You already have 1 live link" in block_text(again.final())  # a second click
    assert len(bot.core.history.period(REP.team_id, "U0PEER", now() - HOUR)) == 1
