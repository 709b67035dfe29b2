"""One Exotel request budget shared by every thread and process, kept in Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from limits import RateLimitItemPerDay, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis import Redis

from bot.exotel.client import RateLimitExceeded


def _moving_window(redis: Redis) -> MovingWindowRateLimiter:
    """A `limits` moving-window limiter on the bot's own Redis connections."""
    return MovingWindowRateLimiter(RedisStorage("redis://", connection_pool=redis.connection_pool))


# `limits`' own moving-window acquire, but taking one slot only while more than `reserve`
# are free: the same list, so issuing (which takes any free slot) sees these entries too.
_ACQUIRE_ABOVE_RESERVE = """
local entry = redis.call('lindex', KEYS[1], tonumber(ARGV[2]) - tonumber(ARGV[4]) - 1)
if entry and tonumber(entry) >= tonumber(ARGV[1]) - tonumber(ARGV[3]) then
    return entry
end
redis.call('lpush', KEYS[1], ARGV[1])
redis.call('ltrim', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('expire', KEYS[1], ARGV[3])
return '-1'
"""


# The account's window, a little over Exotel's minute: a request is counted when it is sent,
# and Exotel counts it when it arrives, up to a second or so later on a busy host. Measured
# by the benchmark: with exactly 60 s, 215 POSTs reached the fake Exotel within one minute.
WINDOW_SECONDS = 62


class SharedRateLimiter:
    """At most `per_minute` acquisitions in any 60 s window, across every process.

    A moving window lets a whole batch go at once while it fits, and never lets the
    account exceed Exotel's per-minute limit. `reserve` slots of every window are kept for
    issuing: the other calls (checks, status polls, reminders) go through `non_issuing()`.
    """

    def __init__(self, redis: Redis, per_minute: int, key: str, reserve: int = 0) -> None:
        if not 0 <= reserve < per_minute:
            raise ValueError(f"a reserve of {reserve} leaves nothing of {per_minute} a minute")
        self._redis = redis
        self._limiter = _moving_window(redis)
        self._item = RateLimitItemPerSecond(per_minute, WINDOW_SECONDS)
        self._key = key
        self.per_minute = per_minute
        self.reserve = reserve
        self._above_reserve = redis.register_script(_ACQUIRE_ABOVE_RESERVE)

    def _window_key(self) -> str:
        """The Redis list `limits` keeps this window in, newest entry first."""
        # RedisStorage has prefixed_key; limits types `storage` as any of its backends.
        key: str = self._limiter.storage.prefixed_key(  # type: ignore[attr-defined]
            self._item.key_for(self._key))
        return key

    def issuing_waits(self, seconds: float) -> None:
        """Commands are queued for this window: until then, status polls take none of it."""
        self._redis.set(f"{self._key}:issuing-waits", "1", px=max(1, int(seconds * 1000)))

    def issuing_is_waiting(self) -> bool:
        return bool(self._redis.exists(f"{self._key}:issuing-waits"))

    def non_issuing(self) -> ReservedLimiter:
        """The limiter for every Exotel call but issuing: it leaves the reserve alone."""
        return ReservedLimiter(self)

    def acquire_above_reserve(self, deadline: float) -> None:
        """Take one slot while more than `reserve` are free, waiting until `deadline`
        (time.monotonic()) at most; a wait that would not end by then fails at once."""
        key = self._window_key()
        expiry = self._item.get_expiry()
        while True:
            blocking = float(self._above_reserve(
                keys=[key], args=[time.time(), self.per_minute, expiry, self.reserve]))
            if blocking < 0:
                return
            _pause(max(0.05, blocking + expiry - time.time()), deadline)

    def wait_for(self, count: int) -> float:
        """Seconds until `count` requests fit the window (0: now), if no one else takes any.

        The window is the list `limits` keeps, newest first; `count` more fit once the entry
        at `limit - count` has aged out: the same test its acquire script makes."""
        if count > self.per_minute:
            raise ValueError(f"{count} requests can never fit a window of {self.per_minute}")
        entry = self._redis.lindex(self._window_key(), self.per_minute - count)
        if entry is None:
            return 0.0
        return max(0.0, float(entry) + self._item.get_expiry() - time.time())

    def share_used(self) -> float:
        """How much of the window is taken right now, 0.0 to 1.0, by every process."""
        stats = self._limiter.get_window_stats(self._item, self._key)
        return min(1.0, max(0.0, 1.0 - stats.remaining / self.per_minute))

    def try_acquire(self) -> bool:
        """Take one request slot if the window has one now; never waits."""
        return bool(self._limiter.hit(self._item, self._key))

    def acquire(self, deadline: float) -> None:
        """Take one request slot, waiting for one until `deadline` (time.monotonic())."""
        while not self._limiter.hit(self._item, self._key):
            reset_at = self._limiter.get_window_stats(self._item, self._key).reset_time
            _pause(max(0.05, reset_at - time.time()), deadline)


def _pause(wait: float, deadline: float) -> None:
    """Sleep towards a slot freeing in `wait` s (a second at most, then look again), or
    RateLimitExceeded at once if it would not free before `deadline` (time.monotonic())."""
    if time.monotonic() + wait > deadline:
        raise RateLimitExceeded(wait)
    time.sleep(min(wait, 1.0))


class ReservedLimiter:
    """An Exotel `Limiter` that never takes the slots reserved for issuing."""

    def __init__(self, shared: SharedRateLimiter) -> None:
        self._shared = shared

    def acquire(self, deadline: float) -> None:
        self._shared.acquire_above_reserve(deadline)


class UserRateLimit:
    """At most `per_minute` of one kind of request per user in any 60 s, across processes."""

    def __init__(self, redis: Redis, per_minute: int, name: str) -> None:
        self._limiter = _moving_window(redis)
        self._item = RateLimitItemPerMinute(per_minute)
        self._name = name
        self.per_minute = per_minute

    def hit(self, team_id: str, user_id: str) -> float | None:
        """Count one request; None if it fits, else the seconds until one more would."""
        if self._limiter.hit(self._item, self._name, team_id, user_id):
            return None
        stats = self._limiter.get_window_stats(self._item, self._name, team_id, user_id)
        return max(1.0, stats.reset_time - time.time())


class PollBudget:
    """The status poller's share of Exotel's budget: a slot only while the shared window
    has more than the issuing reserve free, and at most `own.per_minute` of its own."""

    def __init__(self, shared: SharedRateLimiter, own: SharedRateLimiter) -> None:
        self.shared = shared
        self.own = own

    def take(self) -> bool:
        if self.own.wait_for(1) > 0 or self.shared.issuing_is_waiting():
            return False  # its own minute is spent, or a backlog of commands needs it all
        try:
            self.shared.acquire_above_reserve(time.monotonic())  # never waits
        except RateLimitExceeded:
            return False
        return self.own.try_acquire()

    def acquire(self, deadline: float) -> None:
        """The Limiter an Exotel client calls before each request: no slot, no request."""
        if not self.take():
            raise RateLimitExceeded(float(WINDOW_SECONDS))


class QuotaExceeded(Exception):
    """A user asked for more links than their rolling day allows."""

    def __init__(self, limit: int, remaining: int, more_at: datetime) -> None:
        super().__init__(f"daily link quota reached ({remaining} of {limit} left)")
        self.limit = limit
        self.remaining = remaining
        self.more_at = more_at


# One link's charge to its user's rolling day, at most once per token: the mark and the entry
# are written together, so a charge retried after an answer Redis lost charges nothing more.
# The entry is `limits`' own moving-window acquire of one slot (as _ACQUIRE_ABOVE_RESERVE).
_CHARGE_ONCE = """
if not redis.call('set', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
    return 0
end
local entry = redis.call('lindex', KEYS[1], tonumber(ARGV[2]) - 1)
if entry and tonumber(entry) >= tonumber(ARGV[1]) - tonumber(ARGV[3]) then
    return 1
end
redis.call('lpush', KEYS[1], ARGV[1])
redis.call('ltrim', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('expire', KEYS[1], ARGV[3])
return 1
"""
CHARGED_KEY = "onboard:quota:charged:{}"  # a token charged to its user's quota...
CHARGED_SECONDS = 3600  # ... marked far longer than a command's retries last


class LinkQuota:
    """At most `per_day` links per user in any rolling 24 hours, across every process."""

    def __init__(self, redis: Redis, per_day: int) -> None:
        self._limiter = _moving_window(redis)
        self._item = RateLimitItemPerDay(per_day)
        self.per_day = per_day
        self._charge_once = redis.register_script(_CHARGE_ONCE)

    def check(self, team_id: str, user_id: str, count: int) -> None:
        """QuotaExceeded unless `count` more links fit the user's rolling day."""
        if self._limiter.test(self._item, "links", team_id, user_id, cost=count):
            return
        stats = self._limiter.get_window_stats(self._item, "links", team_id, user_id)
        raise QuotaExceeded(self.per_day, stats.remaining,
                            datetime.fromtimestamp(stats.reset_time, UTC))

    def charge(self, team_id: str, user_id: str, token: str) -> None:
        """Count a link made (only those: links that failed cost the user nothing), once
        however often it is asked for `token`."""
        # RedisStorage has prefixed_key; limits types `storage` as any of its backends.
        window: str = self._limiter.storage.prefixed_key(  # type: ignore[attr-defined]
            self._item.key_for("links", team_id, user_id))
        self._charge_once(keys=[window, CHARGED_KEY.format(token)],
                          args=[time.time(), self.per_day, self._item.get_expiry(),
                                CHARGED_SECONDS])
