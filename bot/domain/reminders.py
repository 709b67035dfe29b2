"""Expiry reminders: one per batch, scheduled in Redis, run by RQ, posted once.

A scheduled reminder is one entry of a sorted set (DUE_KEY: batch id, scored by when it is
due), not an RQ job: a job's hash is about 2 KB a batch. The pool's scheduler, holding the
one lock among all hosts, turns each entry due into an RQ job (`release_due`). Redis gives
durability (a reminder due while every process was down runs when one is back), RQ the
retries. Delivery is at least once, so the job claims the reminder in Redis before posting
and records it as sent afterwards. A post carries Slack message metadata naming its batch:
a retry that finds the claim of a worker that died (or failed) mid-post first looks for
that post in the conversation's history, and records it as sent instead of posting a
second one.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
from redis import Redis
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

from bot.domain.models import Batch
from bot.domain.store import now, redis_errors
from bot.settings import LINK_TTL

log = logging.getLogger(__name__)


def _seconds(name: str, default: str) -> list[int]:
    """Whole seconds from the environment ("5" or "5,60,120"), so tests can shorten them."""
    return [int(part) for part in os.environ.get(name, default).split(",") if part.strip()]


# The reminders scheduled and not yet due: batch id -> when due (a Unix timestamp). Bounded:
# an entry leaves when released (due before its batch expires) or stopped.
DUE_KEY = "onboard:reminder:due"
SENT_KEY = "onboard:reminder:sent:{}"
CLAIM_KEY = "onboard:reminder:claim:{}"
STOPPED_KEY = "onboard:reminder:stopped:{}"
# A reminder's keys outlive its batch by this much, and no more: after the batch has gone
# the job has nothing to send anyway.
AFTER_BATCH = timedelta(hours=1)
# Longer than one send can take (Exotel deadline plus Slack), shorter than the first retry:
# a claim left by a killed worker has lapsed when RQ retries the job.
CLAIM_SECONDS = _seconds("ONBOARD_REMINDER_CLAIM_SECONDS", "45")[0]
JOB_TIMEOUT = 40
RETRY_SECONDS = _seconds("ONBOARD_REMINDER_RETRY_SECONDS", "60,120,300,600,1200")
RETRY = Retry(max=len(RETRY_SECONDS), interval=RETRY_SECONDS)
FAILED_KEPT = timedelta(days=1)  # a failed job, for whoever looks into it; done ones go at once
MAX_RESCHEDULES = 30  # after Slack's 429s; a rate limit lasting hours is an outage
LATE = timedelta(minutes=1)  # a reminder posted later than this counts as late in /metrics
# Slack errors that mean "this channel won't take it": the requester gets a DM instead.
DM_INSTEAD = {"not_in_channel", "channel_not_found", "is_archived", "restricted_action"}
EVENT_TYPE = "onboard_reminder"  # the metadata every reminder post carries
CLOCK_SKEW = timedelta(minutes=1)  # between this machine and Slack, when reading history
HISTORY_PAGES = 5  # of 200 messages each, from the claim's time


class ReminderBusy(Exception):
    """Another worker is sending this reminder right now; RQ retries the job later."""


class SlackRateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Slack rate limit: retry after {retry_after} s")
        self.retry_after = retry_after


def job_id(batch_id: str) -> str:
    return f"reminder-{batch_id}"


def job_options(job_id: str, description: str) -> dict[str, Any]:
    """The retries, timeout and TTLs every reminder job has, scheduled or enqueued now.

    A finished job is deleted at once (its outcome is logged and counted in /metrics); a
    failed one is kept a day."""
    return {"job_id": job_id, "retry": RETRY, "timeout": JOB_TIMEOUT, "result_ttl": 0,
            "failure_ttl": int(FAILED_KEPT.total_seconds()), "description": description}


def enqueue_at(queue: Queue, due: datetime, job_id: str, description: str,
               job: str, *args: Any) -> None:
    """`job(*args)` at `due`, as an RQ scheduled job (a 429's retry, the benchmark)."""
    created = queue.create_job(job, args=args, status=JobStatus.SCHEDULED,
                               **job_options(job_id, description))
    queue.schedule_job(created, due)


def scheduled_count(client: Redis) -> int:
    """Reminders scheduled and not yet due (`python -m bot jobs`, /metrics)."""
    return int(client.zcard(DUE_KEY))


@dataclass
class Claim:
    """Who is sending a reminder since when, and to which conversations it may have posted."""

    at: datetime  # when the first attempt began: no post of it can be older
    until: datetime  # after this the sender is presumed dead or failed
    where: list[str] = field(default_factory=list)
    taken_over: bool = False  # a previous attempt did not finish: look before posting

    def dump(self) -> str:
        return json.dumps({"at": self.at.isoformat(), "until": self.until.isoformat(),
                           "where": self.where})

    @classmethod
    def load(cls, raw: str) -> Claim:
        data = json.loads(raw)
        return cls(datetime.fromisoformat(data["at"]), datetime.fromisoformat(data["until"]),
                   list(data.get("where", [])))


class Reminders:
    """Scheduling and the once-only bookkeeping of reminders."""

    def __init__(self, client: Redis, queue: Queue, lead: timedelta, send_job: str) -> None:
        """`send_job`: the reminder job's name (the engine's registry holds it, above us)."""
        self.redis = client
        self.queue = queue
        self.lead = lead
        self._send_job = send_job

    def schedule(self, batch: Batch) -> datetime:
        """One entry per batch: scheduling it again keeps one, due when last said."""
        due = batch.reminder_due or batch.expires_at - self.lead
        self.redis.zadd(DUE_KEY, {batch.batch_id: due.timestamp()})
        return due

    def release_due(self, limit: int = 100) -> int:
        """Every reminder due now becomes its RQ job, `limit` to a transaction; how many.

        The scheduler runs this while it holds its lock. Each entry leaves the set in the
        same MULTI/EXEC as its job is enqueued: never gone without its job. Two releases of
        one entry (a lapsed lock's holder and the next, a retry after a crash) enqueue the
        same job id twice at worst, and the claim lets only one of them post."""
        released = 0
        while True:
            due = cast(list[tuple[str, float]], self.redis.zrangebyscore(
                DUE_KEY, "-inf", now().timestamp(), start=0, num=limit, withscores=True))
            if due:
                self._enqueue_now(due)
            released += len(due)
            if len(due) < limit:
                return released

    def _enqueue_now(self, entries: list[tuple[str, float]]) -> None:
        with self.queue.connection.pipeline() as pipe:
            pipe.multi()  # RQ's enqueue_call adds to the transaction, and runs nothing
            for batch_id, score in entries:
                due = datetime.fromtimestamp(score, UTC)
                pipe.zrem(DUE_KEY, batch_id)
                self.queue.enqueue_call(self._send_job, args=(batch_id, due.isoformat()),
                                        pipeline=pipe, **job_options(
                                            job_id(batch_id), f"reminder for batch {batch_id}"))
            pipe.execute()

    def scheduled_count(self) -> int:
        return scheduled_count(self.redis)

    def reschedule(self, batch_id: str, due: datetime, attempt: int, delay: timedelta) -> None:
        """The same reminder again after `delay`, as a job of its own (this one is ending)."""
        enqueue_at(self.queue, now() + delay, f"{job_id(batch_id)}-{attempt}",
                   f"reminder for batch {batch_id}, attempt {attempt}", self._send_job,
                   batch_id, due.isoformat(), attempt)

    def stop(self, batch_id: str) -> bool:
        """No reminder for this batch from now on, even one already queued; False if it
        was stopped already. Any number of calls, in any order with forgetting, is fine."""
        with redis_errors():
            # The batch lives at most LINK_TTL from now: so long is long enough.
            first = bool(self.redis.set(STOPPED_KEY.format(batch_id), "1", ex=LINK_TTL, nx=True))
            self.redis.zrem(DUE_KEY, batch_id)
            # A job cancelled (or finished) before cannot be cancelled again: RQ says so.
            with suppress(NoSuchJobError, InvalidJobOperation):
                Job.fetch(job_id(batch_id), connection=self.queue.connection).cancel()
        return first

    def is_stopped(self, batch_id: str) -> bool:
        return bool(self.redis.exists(STOPPED_KEY.format(batch_id)))

    def claim(self, batch: Batch) -> Claim | None:
        """The claim to send, or None if it was sent. ReminderBusy if in flight elsewhere.

        A claim whose sender ran out of time is taken over, keeping its time and where it
        was posting: the new sender looks there first."""
        key, moment = CLAIM_KEY.format(batch.batch_id), now()
        if self.redis.exists(SENT_KEY.format(batch.batch_id)):
            return None
        fresh = Claim(moment, moment + timedelta(seconds=CLAIM_SECONDS))
        if self.redis.set(key, fresh.dump(), nx=True, exat=self._end(batch)):
            return fresh
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None:
                    raise ReminderBusy(batch.batch_id)  # released just now: retry soon
                previous = Claim.load(str(raw))
                if previous.until > moment:
                    raise ReminderBusy(batch.batch_id)
                taken = Claim(previous.at, fresh.until, previous.where, taken_over=True)
                pipe.multi()
                pipe.set(key, taken.dump(), exat=self._end(batch))
                pipe.execute()
            except redis.WatchError:
                raise ReminderBusy(batch.batch_id) from None
        return taken

    def posting_to(self, batch: Batch, claim: Claim, channel: str) -> None:
        """Note, before posting, where a post may land, for a retry to look there."""
        if channel not in claim.where:
            claim.where.append(channel)
            self.redis.set(CLAIM_KEY.format(batch.batch_id), claim.dump(),
                           exat=self._end(batch))

    def mark_sent(self, batch: Batch) -> None:
        with self.redis.pipeline() as pipe:
            pipe.set(SENT_KEY.format(batch.batch_id), now().isoformat(), exat=self._end(batch))
            pipe.delete(CLAIM_KEY.format(batch.batch_id))
            pipe.execute()

    def give_up(self, batch: Batch, claim: Claim) -> None:
        """This attempt failed. If it may have posted, leave a lapsed claim saying where."""
        key = CLAIM_KEY.format(batch.batch_id)
        if not claim.where:
            self.redis.delete(key)
            return
        lapsed = Claim(claim.at, now(), claim.where)
        self.redis.set(key, lapsed.dump(), exat=self._end(batch))

    @staticmethod
    def _end(batch: Batch) -> int:
        # Never in the past, which would drop the key at once (a reminder run very late).
        end = max(batch.expires_at + AFTER_BATCH, now() + timedelta(seconds=CLAIM_SECONDS * 2))
        return int(end.timestamp())
