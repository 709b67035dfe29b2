"""Acceptance 4 of issue 25: the managers' digest through real processes. Two worker pools
share one Redis with DIGEST_CRON every minute: each tick's digest reaches DIGEST_CHANNEL
exactly once, naming the rep, the counts and the customer whose link expired unused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from bot.domain.history import History
from bot.domain.models import TrackedLink
from bot.exotel.sandbox import ExotelSandbox
from testkit.env import bot_env
from testkit.processes import BotProcess
from testkit.slack import FakeSlack
from testkit.wait import wait_until
from tests.blockkit import block_text
from tests.support import REP

pytestmark = pytest.mark.slow  # real processes, and two minutes of a real clock

CHANNEL = "C0DIGEST"


def link(note: str, issued_at: datetime, life: timedelta = timedelta(hours=24)) -> TrackedLink:
    token = str(uuid.uuid4())
    return TrackedLink(token=token, url=f"https://messaging.exotel.com/ua-links/isv-onboard/"
                       f"{token}", batch_id=uuid.uuid4().hex, requester=REP, note=note,
                       issued_at=issued_at, expires_at=issued_at + life)


def seed(client: redis.Redis, issued_at: datetime, used: str, lapsed: str,
         life: timedelta = timedelta(hours=24)) -> None:
    """A link for `used` that turned USED after 10 min, one for `lapsed` (reference
    ACME Corp) that expired unused, both by U0REP, as the bot's history records them."""
    history = History(client, timedelta(days=90))
    done = link(used, issued_at, life)
    history.issued(done)
    history.used(done, issued_at + timedelta(minutes=10))
    history.issued(link(lapsed, issued_at, life), customer_ref="ACME Corp")


def digests(slack: FakeSlack) -> list[dict[str, Any]]:
    return [c.params for c in slack.calls("chat.postMessage") if c.params["channel"] == CHANNEL]


def ticks(slack: FakeSlack) -> list[str]:
    with slack.lock:
        return [str((m.get("metadata") or {}).get("event_payload", {}).get("tick"))
                for m in slack.messages.get(CHANNEL, [])]


@contextmanager
def pools(settings: dict[str, str], count: int) -> Iterator[list[BotProcess]]:
    started: list[BotProcess] = []
    try:
        for _ in range(count):
            started.append(BotProcess(settings, "worker").start(timeout=60))
        yield started
    finally:
        for pool in started:
            pool.stop(timeout=20)


@pytest.mark.timeout(300)  # a cron every minute: up to three minutes of a real clock
def test_two_processes_post_exactly_one_digest_per_tick_naming_rep_counts_and_customer(
        redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox,
        slack: FakeSlack) -> None:
    """Acceptance 4. The first digest is the minute just passed when the pools start (the
    week before it); the second, the next minute's, whose links were recorded beforehand
    with a time in it (one expired unused within it)."""
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    if datetime.now(UTC) - minute > timedelta(seconds=25):  # room for the pools to start
        wait_until(lambda: datetime.now(UTC) >= minute + timedelta(minutes=1), 60,
                   "the next minute")
        minute += timedelta(minutes=1)
    seed(redis_client, minute - timedelta(days=2), "Used Co", "Lapsed Co")
    seed(redis_client, minute + timedelta(seconds=55), "Second Used Co", "Second Lapsed Co",
         life=timedelta(seconds=2))
    settings = bot_env(exotel, slack, REDIS_URL=redis_url, DIGEST_CHANNEL=CHANNEL,
                       DIGEST_CRON="* * * * *", WORKER_PROCESSES="1")
    with pools(settings, 2):
        wait_until(lambda: len(digests(slack)) >= 2, 150, "two digests")
        # The third tick, of a minute with nothing issued, passes: nothing more is posted.
        after = minute + timedelta(minutes=2, seconds=15)
        wait_until(lambda: datetime.now(UTC) > after, 150, "the third tick passed")
    assert ticks(slack) == [minute.isoformat(), (minute + timedelta(minutes=1)).isoformat()]
    first, second = (block_text(post) for post in digests(slack))
    for text, customer in ((first, "Lapsed Co"), (second, "Second Lapsed Co")):
        assert ("<@U0REP>: 2 issued, 1 turned USED, 1 expired unused; median time to USED "
                "10 min") in text
        assert f"• {customer} (CRM ref ACME Corp), <@U0REP>" in text
    assert "Second" not in first
