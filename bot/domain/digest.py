"""The managers' digest: when one is due, released once per tick among all processes, and
posted once per tick (docs/decisions/0023-digest.md). No Slack here: `bot.runtime.jobs`'s
`send_digest` reads the history, renders and posts.

When: DIGEST_CRON read as wall-clock time in DIGEST_TIMEZONE. A wall-clock time that comes
twice (clocks going back) ticks once, at its first; one that never comes (clocks going
forward) ticks as late as the clocks jumped (02:30 on a night that skips 02:00-03:00: 03:30).

Released once: the pool's scheduler, holding the one lock among all hosts (decision 0018),
calls `release_due` each tick, as it does the reminders' (decision 0020). It works out the
latest tick at or before now; unless that tick (or a later one) is the released one, it
moves DIGEST_RELEASED_KEY to it and enqueues the digest job for it in one MULTI/EXEC, under
WATCH of that key: two callers at once (a lapsed lock's holder and the next) cannot both
succeed, and the key never moves without its job. A bot down over several ticks releases
only the latest one on its return. The key's previous value, the last digest's tick, starts
the new digest's period; with none, the period is the FIRST_PERIOD before the tick.

Posted once: RQ delivers at least once, so the job claims its tick (SET NX, CLAIM_SECONDS)
before posting and marks it posted after (`claim`, `posted`).

Bounded: one released key, lapsing AUDIT_RETENTION_DAYS after the tick that follows it (it
must outlive the wait for that tick, or the same tick would be released again), and one
claim/posted key per tick, lapsing within a day.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import redis
from croniter import croniter
from redis import Redis
from rq import Queue, Retry

from bot.domain.store import DIGEST_POSTED_KEY, DIGEST_RELEASED_KEY, now, redis_errors

FIRST_PERIOD = timedelta(days=7)  # the first digest's period: the week before its tick
# Longer than one digest job can take (JOB_TIMEOUT), shorter than its first retry: a claim
# left by a killed worker has lapsed when RQ retries the job.
JOB_TIMEOUT = 40
CLAIM_SECONDS = 50
RETRY = Retry(max=3, interval=[60, 300, 900])
POSTED_KEPT = timedelta(days=1)  # longer than the job's retries and RQ's abandoned-job check
FAILED_KEPT = timedelta(days=1)
EVENT_TYPE = "onboard_digest"  # the metadata a digest post carries, naming its tick
# Candidate ticks looked at, either way, before one that exists in the zone is found: a
# skipped hour holds at most 60 of a every-minute cron's.
MAX_STEPS = 24 * 60

ClaimState = Literal["mine", "busy", "done"]


class DigestBusy(Exception):
    """Another worker is posting this tick's digest right now; RQ retries the job later."""


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    """`moment` as a naive wall-clock time in `zone`, to the whole second."""
    return moment.astimezone(zone).replace(tzinfo=None, microsecond=0)


def _moment(wall: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall-clock time in `zone` as UTC: the first of two that come twice (fold 0);
    one that never comes as late as the clocks jumped (fold 0's reading of a gap)."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _walk(cron: str, start: datetime, forward: bool) -> Iterator[datetime]:
    ticks = croniter(cron, start)
    for _ in range(MAX_STEPS):
        found: datetime = ticks.get_next(datetime) if forward else ticks.get_prev(datetime)
        yield found
    raise ValueError(f"no tick of {cron!r} within {MAX_STEPS} steps of {start}")


def latest_tick(cron: str, zone: ZoneInfo, at: datetime) -> datetime:
    """The latest tick of `cron` in `zone` at or before `at` (UTC)."""
    # croniter's get_prev is strictly before its start: a second past `at`'s whole second
    # lets a tick at exactly `at` count.
    for wall in _walk(cron, _wall(at, zone) + timedelta(seconds=1), forward=False):
        moment = _moment(wall, zone)
        if moment <= at:
            return moment
    raise AssertionError("unreachable")  # _walk raises first


def next_tick(cron: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first tick of `cron` in `zone` after `after` (UTC)."""
    for wall in _walk(cron, _wall(after, zone), forward=True):
        moment = _moment(wall, zone)
        if moment > after:
            return moment
    raise AssertionError("unreachable")


def job_id(tick: datetime) -> str:
    return f"digest-{int(tick.timestamp())}"


def job_options(tick: datetime) -> dict[str, Any]:
    """The digest job's id (one per tick), retries, timeout and TTLs."""
    return {"job_id": job_id(tick), "retry": RETRY, "timeout": JOB_TIMEOUT, "result_ttl": 0,
            "failure_ttl": int(FAILED_KEPT.total_seconds()),
            "description": f"digest for {tick.isoformat()}"}


class Digests:
    """When digests are due, their release to the job engine, and their once-only posting.

    `send_job`: the digest job's name (the engine's registry holds it, above us); `kept`:
    AUDIT_RETENTION_DAYS, past which no history is left to sum up anyway."""

    def __init__(self, client: Redis, queue: Queue, send_job: str, cron: str, zone: ZoneInfo,
                 kept: timedelta, clock: Callable[[], datetime] = now) -> None:
        self.redis = client
        self.queue = queue
        self.cron = cron
        self.zone = zone
        self.kept = kept
        self._send_job = send_job
        self._clock = clock
        # Once a tick is known released, nothing is due before the next one: until then
        # `release_due` asks Redis nothing (an idle bot writes, and reads, next to nothing).
        self._quiet_until: datetime | None = None

    def release_due(self) -> int:
        """The digest job of the latest tick, unless it was released: how many enqueued."""
        moment = self._clock()
        if self._quiet_until is not None and moment < self._quiet_until:
            return 0
        tick = latest_tick(self.cron, self.zone, moment)
        released = self._release(tick)
        if released is not None:
            self._quiet_until = next_tick(self.cron, self.zone, tick)
        return int(bool(released))

    def _release(self, tick: datetime) -> bool | None:
        """True: released now; False: it (or a later tick) was already; None: another
        caller moved the key meanwhile (the next call finds out which)."""
        stamp = int(tick.timestamp())
        lapses = next_tick(self.cron, self.zone, tick) + self.kept
        with self.queue.connection.pipeline() as pipe:
            try:
                pipe.watch(DIGEST_RELEASED_KEY)
                raw = pipe.get(DIGEST_RELEASED_KEY)
                last = int(raw) if raw else None
                if last is not None and last >= stamp:
                    return False
                since = (datetime.fromtimestamp(last, UTC) if last is not None
                         else tick - FIRST_PERIOD)
                pipe.multi()  # RQ's enqueue_call adds to the transaction, and runs nothing
                pipe.set(DIGEST_RELEASED_KEY, stamp, exat=int(lapses.timestamp()))
                self.queue.enqueue_call(self._send_job, args=(tick.isoformat(),
                                                              since.isoformat()),
                                        pipeline=pipe, **job_options(tick))
                pipe.execute()
            except redis.WatchError:
                return None
        return True

    def released(self) -> datetime | None:
        """The latest tick released, if any (tests, the operator)."""
        with redis_errors():
            raw = self.redis.get(DIGEST_RELEASED_KEY)
        return datetime.fromtimestamp(int(raw), UTC) if raw else None

    def claim(self, tick: datetime) -> ClaimState:
        """"mine": post it now; "done": it was posted (or there was nothing to post);
        "busy": another worker is at it (or died at it less than CLAIM_SECONDS ago)."""
        key = DIGEST_POSTED_KEY.format(int(tick.timestamp()))
        with redis_errors():
            if self.redis.set(key, "claimed", nx=True, ex=CLAIM_SECONDS):
                return "mine"
            return "done" if self.redis.get(key) == "posted" else "busy"

    def posted(self, tick: datetime) -> None:
        """`tick`'s digest is done: posted, or nothing to post."""
        with redis_errors():
            self.redis.set(DIGEST_POSTED_KEY.format(int(tick.timestamp())), "posted",
                           ex=POSTED_KEPT)
