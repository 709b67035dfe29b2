"""One Exotel request budget shared by every thread and process, kept in Redis."""

from __future__ import annotations

import time

from limits import RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis import Redis


class RateLimitExceeded(Exception):
    def __init__(self, retry_in: float) -> None:
        super().__init__(f"rate limit reached; retry in {retry_in:.0f} s")
        self.retry_in = retry_in


class SharedRateLimiter:
    """At most `per_minute` acquisitions in any 60 s window, across every process.

    A moving window lets a whole batch go at once while it fits, and never lets the
    account exceed Exotel's per-minute limit.
    """

    def __init__(self, redis: Redis, per_minute: int, key: str) -> None:
        storage = RedisStorage("redis://", connection_pool=redis.connection_pool)
        self._limiter = MovingWindowRateLimiter(storage)
        self._item = RateLimitItemPerMinute(per_minute)
        self._key = key

    def acquire(self, deadline: float) -> None:
        """Take one request slot, waiting for one until `deadline` (time.monotonic())."""
        while not self._limiter.hit(self._item, self._key):
            reset_at = self._limiter.get_window_stats(self._item, self._key).reset_time
            wait = max(0.05, reset_at - time.time())
            if time.monotonic() + wait > deadline:
                raise RateLimitExceeded(wait)
            time.sleep(min(wait, 1.0))
