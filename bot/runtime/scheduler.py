"""The scheduler: the worker pool's own loop moves due jobs and keeps RQ's registries clean.

One runs in every pool (one per host); the one holding SCHEDULER_LOCK does the work:
- moves due jobs (commands waiting for Exotel's budget, retries, the status poll chain, a
  reminder back after Slack's 429) from RQ's scheduled registries onto their queues, with
  RQ's own `RQScheduler.enqueue_scheduled_jobs`;
- then runs its due sources: each turns what is due of a schedule kept outside RQ into jobs
  (the reminders' sorted set, `Reminders.release_due`);
- every MAINTENANCE_SECONDS, RQ's maintenance of each queue: a dead worker's started job is
  failed (and its failure callback tells the requester), dead workers are unregistered, and
  a job a worker took but died before starting is queued again (`_requeue_untaken`).

The lock lives LOCK_SECONDS and is renewed, or tried for, every RENEW_SECONDS: when its
host dies another takes over within their sum (decision 0018). RQ's own scheduler keeps
its locks 61 s in a process forked for it, and each RQ worker runs maintenance under a lock
of its own: both wrote to Redis every second or so, idle or not (decision 0019).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence

import redis
from redis import Redis
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import JobStatus
from rq.registry import clean_registries
from rq.scheduler import RQScheduler
from rq.scripts import acquire_or_refresh_lock, release_lock
from rq.worker_registration import clean_worker_registry

from bot.engine.registry import SCHEDULER_LOCK

log = logging.getLogger(__name__)

LOCK_SECONDS = 12  # a dead holder's lock lapses after this; another host then takes it
RENEW_SECONDS = 4  # how often the holder renews it, and others try to take it
MAINTENANCE_SECONDS = 10
# A job still in a queue's intermediate list this long after maintenance first saw it there
# was taken by a worker that died before starting it (a live one starts it at once).
UNTAKEN_SECONDS = 10.0


# Called each tick while holding the lock; returns how many jobs it enqueued.
DueSource = Callable[[], int]


class Scheduler:
    def __init__(self, queues: Sequence[Queue], connection: Redis,
                 due_sources: Sequence[DueSource] = (),
                 clock: Callable[[], float] = time.monotonic, *,
                 logging_level: str = "WARNING") -> None:
        """`due_sources`: each called every tick while this holds the lock, to move what
        is due of its own (reminders); `logging_level`: RQ's loggers' (`logs.library_level`),
        which RQ's constructor sets."""
        self._queues = list(queues)
        self._due_sources = list(due_sources)
        # RQ's scheduler does the moving; the lock (and the loop) are this class's.
        self._rq = RQScheduler([queue.name for queue in queues], connection=connection,
                               logging_level=logging_level)
        self._rq._acquired_locks = {queue.name for queue in queues}
        # The lock's value: which process on which host holds it (`python -m bot jobs`).
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{self._rq.name[:8]}"
        self._holding = False
        self._clock = clock
        self._next_renewal = 0.0
        self._next_maintenance = 0.0
        self._untaken: dict[str, float] = {}  # job id -> when first seen taken, not started
        self._down = False

    @property
    def holding(self) -> bool:
        return self._holding

    def tick(self) -> None:
        """Renew (or try to take) the lock when due; while holding it, move what is due and
        run maintenance when due. Never raises for Redis: a Redis that does not answer is
        said once, and tried again next tick."""
        try:
            if self._clock() >= self._next_renewal:
                self._renew()
                self._next_renewal = self._clock() + RENEW_SECONDS
            if self._holding:
                self._rq.enqueue_scheduled_jobs()
                for release_due in self._due_sources:
                    release_due()
                if self._clock() >= self._next_maintenance:
                    self.maintain()
                    self._next_maintenance = self._clock() + MAINTENANCE_SECONDS
        except redis.RedisError as problem:
            if not self._down:
                log.warning("scheduler: Redis is not answering (%s); it tries again",
                            type(problem).__name__)
            self._down = True
            return
        if self._down:
            log.info("scheduler: Redis answers again")
            self._down = False

    def maintain(self) -> list[str]:
        """RQ's maintenance of every queue, with our own treatment of its intermediate list:
        RQ's fails a job stuck there, without its failure callback, so nobody is told.
        Returns the ids of the jobs queued again."""
        again: list[str] = []
        taken: set[str] = set()
        for queue in self._queues:
            clean_registries(queue)
            clean_worker_registry(queue)
            again += self._requeue_untaken(queue, taken)
        # Seen only in memory, across all the queues: what a live worker took and started
        # is forgotten here (and only here: one queue's pass must not forget another's).
        self._untaken = {job_id: seen for job_id, seen in self._untaken.items()
                         if job_id in taken}
        return again

    def _requeue_untaken(self, queue: Queue, taken: set[str]) -> list[str]:
        """Put back at the front of `queue` each job a worker moved to the intermediate
        list and died before starting (so never ran: safe to run, even issuing); adds to
        `taken` those still waiting for UNTAKEN_SECONDS to pass."""
        intermediate = IntermediateQueue(queue.key, queue.connection)
        again = []
        for job_id in intermediate.get_job_ids():
            job = queue.fetch_job(job_id)
            if job is None or job.get_status(refresh=False) != JobStatus.QUEUED:
                intermediate.remove(job_id)  # gone, or started: RQ's registries have it
                continue
            first_seen = self._untaken.setdefault(job_id, self._clock())
            if self._clock() - first_seen < UNTAKEN_SECONDS:
                taken.add(job_id)
                continue
            with queue.connection.pipeline() as pipe:
                pipe.lrem(intermediate.key, 1, job_id)
                pipe.lpush(queue.key, job_id)
                pipe.execute()
            log.warning("job %s was taken by a worker that died before starting it: queued "
                        "again", job_id)
            again.append(job_id)
        return again

    def release(self) -> None:
        """Give the lock up (on a graceful stop), so another host takes it at once."""
        if self._holding:
            with contextlib.suppress(redis.RedisError):  # it lapses on its own
                release_lock(self._rq.connection, SCHEDULER_LOCK, self._owner)
        self._holding = False

    def _renew(self) -> None:
        outcome = acquire_or_refresh_lock(self._rq.connection, SCHEDULER_LOCK, self._owner,
                                          LOCK_SECONDS)
        holding = outcome != "taken"
        if holding and not self._holding:
            log.info("scheduler: this host now schedules and keeps the queues")
            self._rq._scheduled_job_registries = []
            self._next_maintenance = 0.0  # at once: the last holder may have died
        elif self._holding and not holding:
            log.warning("scheduler: another host took over")
        self._holding = holding
