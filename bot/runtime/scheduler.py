"""The scheduler: RQ's, run from the worker pool's own loop, one per host.

It moves due jobs (reminders, commands waiting for Exotel's budget, retries, the status
poll chain) from RQ's scheduled registries onto their queues, for every queue, while it
holds RQ's scheduler lock of that queue. Any number of hosts run one each; one holds the
locks, and when its host dies another takes them over within LOCK_SECONDS plus one tick
(decision 0018). RQ's own scheduler keeps its lock for 61 s and runs in a process of its
own forked by a worker; this one needs no process, and renews its locks every
RENEW_SECONDS rather than every second, which keeps an idle bot's writes to Redis small.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence

import redis
from redis import Redis
from rq import Queue
from rq.scheduler import RQScheduler
from rq.scripts import acquire_or_refresh_lock, release_lock

log = logging.getLogger(__name__)

LOCK_SECONDS = 12  # a dead holder's locks lapse after this; another host then takes them
RENEW_SECONDS = 4  # how often the holder renews them, and others try to take them


class Scheduler:
    def __init__(self, queues: Sequence[Queue], connection: Redis,
                 clock: Callable[[], float] = time.monotonic, *,
                 logging_level: str = "WARNING") -> None:
        """`logging_level`: RQ's loggers' (`logs.library_level`), which RQ's constructor sets."""
        self._names = [queue.name for queue in queues]
        # RQ's scheduler does the moving; its locks (and loop) are this class's.
        self._rq = RQScheduler(self._names, connection=connection, logging_level=logging_level)
        # The locks' value: which process on which host holds them (`python -m bot jobs`).
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{self._rq.name[:8]}"
        self._held: set[str] = set()
        self._clock = clock
        self._next_renewal = 0.0
        self._down = False

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def tick(self) -> None:
        """Renew (or try to take) the locks when due, then move what is due. Never raises
        for Redis: a Redis that does not answer is said once, and tried again next tick."""
        try:
            if self._clock() >= self._next_renewal:
                self._renew()
                self._next_renewal = self._clock() + RENEW_SECONDS
            if self._held:
                self._rq.enqueue_scheduled_jobs()
        except redis.RedisError as problem:
            if not self._down:
                log.warning("scheduler: Redis is not answering (%s); it tries again",
                            type(problem).__name__)
            self._down = True
            return
        if self._down:
            log.info("scheduler: Redis answers again")
            self._down = False

    def release(self) -> None:
        """Give the locks up (on a graceful stop), so another host takes them at once."""
        connection = self._rq.connection
        try:
            for name in self._held:
                release_lock(connection, RQScheduler.get_locking_key(name), self._owner)
        except redis.RedisError:
            pass  # they lapse on their own
        self._held = set()

    def _renew(self) -> None:
        connection = self._rq.connection
        held = set()
        for name in self._names:
            outcome = acquire_or_refresh_lock(connection, RQScheduler.get_locking_key(name),
                                              self._owner, LOCK_SECONDS)
            if outcome != "taken":
                held.add(name)
        if held != self._held:
            gained, lost = held - self._held, self._held - held
            if gained:
                log.info("scheduler: this host now schedules %s", ", ".join(sorted(gained)))
            if lost:
                log.warning("scheduler: another host took over %s", ", ".join(sorted(lost)))
            # RQ's scheduler reads the registries of the locks it holds.
            self._rq._acquired_locks = held
            self._rq._scheduled_job_registries = []
        self._held = held
