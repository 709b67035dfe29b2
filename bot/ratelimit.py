"""One Exotel request budget shared by every thread and process, kept in Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from limits import RateLimitItemPerDay, RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis import Redis


def _moving_window(redis: Redis) -> MovingWindowRateLimiter:
    """A `limits` moving-window limiter on the bot's own Redis connections."""
    return MovingWindowRateLimiter(RedisStorage("redis://", connection_pool=redis.connection_pool))


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
        self._limiter = _moving_window(redis)
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


class QuotaExceeded(Exception):
    """A user asked for more links than their rolling day allows."""

    def __init__(self, limit: int, remaining: int, more_at: datetime) -> None:
        super().__init__(f"daily link quota reached ({remaining} of {limit} left)")
        self.limit = limit
        self.remaining = remaining
        self.more_at = more_at


class LinkQuota:
    """At most `per_day` links per user in any rolling 24 hours, across every process."""

    def __init__(self, redis: Redis, per_day: int) -> None:
        self._limiter = _moving_window(redis)
        self._item = RateLimitItemPerDay(per_day)
        self.per_day = per_day

    def take(self, team_id: str, user_id: str, count: int) -> None:
        if self._limiter.hit(self._item, "links", team_id, user_id, cost=count):
            return
        stats = self._limiter.get_window_stats(self._item, "links", team_id, user_id)
        raise QuotaExceeded(self.per_day, stats.remaining,
                            datetime.fromtimestamp(stats.reset_time, UTC))
