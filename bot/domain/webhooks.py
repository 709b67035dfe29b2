"""Webhook deliveries: one RQ job per event and receiver, on a queue of their own, and what
came of them per receiver, in Redis.

Emitting an event enqueues one delivery job per configured URL (not disabled), on the
webhooks queue (its one worker exists only while WEBHOOK_URLS is set), so a slow or dead
receiver never delays issuing, reminders or the other receivers. A delivery that got no
2xx answer is retried by RQ on WEBHOOK_RETRY_SCHEDULE (`Retry`); its job holds the event's
id and body, so every retry carries the same `webhook-id`. A 410 Gone disables the URL
(one log line) until `python -m bot webhooks enable URL`. Per URL the bot keeps delivered,
pending and failing counts and the last error (`python -m bot webhooks`, `doctor`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Retry

from bot.domain.events import Event, Sealed
from bot.domain.store import (
    WEBHOOK_DISABLED_KEY,
    WEBHOOK_STATS_KEPT,
    WEBHOOK_STATS_KEY,
    now,
    redis_errors,
    url_key,
)
from bot.telemetry.logs import safe_url
from bot.webhooks import sender
from bot.webhooks.sender import Outcome

log = logging.getLogger(__name__)

JOB_TIMEOUT = int(sender.TIMEOUT) + 20  # one attempt: the receiver's 10 s and margin
FAILED_KEPT = timedelta(days=1)
ERROR_LENGTH = 200  # of the last error kept per URL (our words, never a response body)


class DeliveryFailed(Exception):
    """No 2xx answer: RQ retries the delivery on the schedule."""


@dataclass(frozen=True)
class ReceiverState:
    url: str
    delivered: int
    pending: int
    failing: int
    gave_up: int
    last_error: str
    last_error_at: str
    disabled: bool


Send = Callable[[str, str, str, str], Outcome]


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt came to, for the job's line."""

    said: str
    trouble: bool = False  # a 410 Gone, or deliveries given up: the operator should see it


def _send(url: str, secret: str, event_id: str, body: str) -> Outcome:
    return sender.send(url, secret, event_id, body)


class Webhooks:
    """The outbox (`emit`), one delivery attempt (`deliver`), and each URL's record."""

    def __init__(self, client: Redis, queue: Queue, job: str, urls: Sequence[str],
                 secret: str, schedule: Sequence[int], send: Send = _send) -> None:
        self.redis = client
        self.queue = queue
        self.job = job  # the delivery job's name (the registry's): the job module sits above
        self.urls = list(urls)
        self.secret = secret
        self.schedule = list(schedule)
        self.send = send

    # The outbox.

    def emit(self, event: Event) -> int:
        """One delivery job per receiver not disabled, each with its pending count, in one
        transaction (the disabled marks read in one round trip before); how many were
        queued."""
        with redis_errors():
            marks = self.redis.mget([WEBHOOK_DISABLED_KEY.format(url_key(url))
                                     for url in self.urls])
        urls = [url for url, mark in zip(self.urls, marks, strict=True) if mark is None]
        if not urls:
            return 0
        with redis_errors(), self.queue.connection.pipeline() as pipe:
            pipe.multi()  # RQ's enqueue_call adds to the transaction, and runs nothing
            for url in urls:
                key = url_key(url)
                self._counting(pipe, url, {"pending": 1})
                # By the URL's key (a URL may hold a secret), the body sealed: RQ logs the
                # arguments of a job that raised, as each failed attempt does.
                self.queue.enqueue_call(
                    self.job, args=(key, event.id, Sealed(event.body)),
                    job_id=f"webhook-{event.id}-{key}",
                    timeout=JOB_TIMEOUT, result_ttl=0,
                    failure_ttl=int(FAILED_KEPT.total_seconds()),
                    retry=Retry(max=len(self.schedule), interval=self.schedule)
                    if self.schedule else None,
                    meta={"retries": len(self.schedule)},
                    description=f"webhook {event.type}", pipeline=pipe)
            pipe.execute()
        return len(urls)

    # One attempt, run by the delivery job.

    def deliver(self, key: str, event_id: str, body: Sealed, *, failed_before: bool,
                last: bool) -> Attempt:
        """Send once to the URL whose `url_key` is `key`; what came of it. DeliveryFailed
        (after recording the error) when RQ should try again later."""
        url = next((url for url in self.urls if url_key(url) == key), None)
        if url is None:
            return Attempt(f"{event_id} dropped: its URL is no longer in WEBHOOK_URLS")
        where = safe_url(url)
        if self.disabled(url):
            self._end(url, failed_before)
            return Attempt(f"dropped for {where}: disabled by its 410 Gone", trouble=True)
        outcome = self.send(url, self.secret, event_id, body.text)
        if outcome.delivered:
            self._end(url, failed_before, delivered=1)
            return Attempt(f"{event_id} delivered to {where} ({outcome})")
        self._error(url, str(outcome), first=not failed_before)
        if outcome.gone:
            self.disable(url)
            self._end(url, True)
            log.warning("webhook receiver %s answered 410 Gone: no more deliveries to it "
                        "until `python -m bot webhooks enable URL`", where)
            return Attempt(f"{event_id} refused by {where} (410 Gone): URL disabled",
                           trouble=True)
        if last:
            self._end(url, True, gave_up=1)
            return Attempt(f"{event_id} not delivered to {where}: {outcome}; gave up",
                           trouble=True)
        raise DeliveryFailed(f"{where}: {outcome}")

    # Each receiver's record.

    def disabled(self, url: str) -> bool:
        with redis_errors():
            return bool(self.redis.exists(WEBHOOK_DISABLED_KEY.format(url_key(url))))

    def disable(self, url: str) -> None:
        with redis_errors():
            self.redis.set(WEBHOOK_DISABLED_KEY.format(url_key(url)), now().isoformat())

    def enable(self, url: str) -> bool:
        """Deliveries to `url` resume; False if it was not disabled."""
        with redis_errors():
            return bool(self.redis.delete(WEBHOOK_DISABLED_KEY.format(url_key(url))))

    def state(self, url: str) -> ReceiverState:
        with redis_errors():
            raw = self.redis.hgetall(WEBHOOK_STATS_KEY.format(url_key(url)))
            disabled = self.disabled(url)

        def number(name: str) -> int:
            return max(0, int(raw.get(name, 0)))

        return ReceiverState(url=url, delivered=number("delivered"), pending=number("pending"),
                             failing=number("failing"), gave_up=number("gave_up"),
                             last_error=str(raw.get("last_error", "")),
                             last_error_at=str(raw.get("last_error_at", "")),
                             disabled=disabled)

    def _end(self, url: str, was_failing: bool, *, delivered: int = 0, gave_up: int = 0
             ) -> None:
        self._count(url, pending=-1, failing=-1 if was_failing else 0, delivered=delivered,
                    gave_up=gave_up)

    def _error(self, url: str, error: str, *, first: bool) -> None:
        key = WEBHOOK_STATS_KEY.format(url_key(url))
        with redis_errors(), self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={"last_error": error[:ERROR_LENGTH],
                                    "last_error_at": now().isoformat(timespec="seconds")})
            if first:
                pipe.hincrby(key, "failing", 1)
            pipe.expire(key, WEBHOOK_STATS_KEPT)
            pipe.execute()

    def _count(self, url: str, **changes: int) -> None:
        with redis_errors(), self.redis.pipeline(transaction=False) as pipe:
            self._counting(pipe, url, changes)
            pipe.execute()

    @staticmethod
    def _counting(pipe: Pipeline, url: str, changes: dict[str, int]) -> None:
        """Adds `changes` to the URL's counts, and renews their expiry, in `pipe`."""
        key = WEBHOOK_STATS_KEY.format(url_key(url))
        for name, change in changes.items():
            if change:
                pipe.hincrby(key, name, change)
        pipe.expire(key, WEBHOOK_STATS_KEPT)
