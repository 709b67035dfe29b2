"""Issued tokens and batches in Redis, each kept as long as Exotel's link lives, and
ENDED_KEPT more for the status poll alone (every other read treats them as gone then)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import redis
from redis import Redis

from bot.domain.models import Batch, Listing, Requester, TrackedLink
from bot.exotel.client import OnboardingLink
from bot.settings import LINK_TTL, Settings

TOKEN_KEY = "onboard:token:{}"
BATCH_KEY = "onboard:batch:{}"
# Batch ids by expiry time, for listings: each requester's, each channel's, everyone's.
USER_INDEX = "onboard:batches:user:{}:{}"
CHANNEL_INDEX = "onboard:batches:channel:{}"
ALL_INDEX = "onboard:batches:all"
# A batch's keys (and its entry in ALL_INDEX) outlive its links by this: the status poll
# learns from them what became of a link whose 24 h just ended, and tells receivers that it
# expired unused (`link.expired`), which Exotel never says by itself (decision 0023).
ENDED_KEPT = timedelta(hours=1)
# Per requester and customer note: their newest batch for that customer, while it lives.
NOTE_KEY = "onboard:note:{}:{}:{}"
FORGOTTEN_KEY = "onboard:forgotten:{}"  # a batch id or token forgotten, until its link expires
ONCE_KEY = "onboard:once:{}"  # see `TokenStore.first_time`
# Webhook deliveries, per receiver (its URL's `url_key`, never the URL, which may hold a
# secret): counts and the last error, a hash that lapses WEBHOOK_STATS_KEPT after its last
# write; and the mark a 410 Gone leaves, kept until the operator re-enables the URL (one
# per URL ever configured: bounded).
WEBHOOK_STATS_KEY = "onboard:webhook:stats:{}"
WEBHOOK_DISABLED_KEY = "onboard:webhook:disabled:{}"
WEBHOOK_STATS_KEPT = timedelta(days=30)
# The per-link history (bot.domain.history), kept AUDIT_RETENTION_DAYS: per team, its links
# by issue time (member "user|link id", trimmed to the retention as it is written), and one
# compact JSON string per link (a string, not a hash: a note over 64 bytes would make a
# hash a 2 KB hashtable; link id: `link_id` below, never the token).
HISTORY_INDEX = "onboard:history:team:{}"
HISTORY_LINK = "onboard:history:link:{}"
# Per team, the links that turned USED (member "user|id", score used at): the funnel's other half.
HISTORY_USED = "onboard:history:used:{}"
# The managers' digest (bot.domain.digest): the latest tick released (Unix seconds), one
# key, lapsing AUDIT_RETENTION_DAYS after the tick that follows it; and per tick, whether
# its digest is being posted ("claimed", for CLAIM_SECONDS) or was ("posted", a day).
DIGEST_RELEASED_KEY = "onboard:digest:released"
DIGEST_POSTED_KEY = "onboard:digest:posted:{}"
Scope = Literal["user", "channel", "all"]


def _kept_from(scope: Scope) -> float:
    """The oldest expiry an index keeps: listings only live batches, ALL_INDEX those that
    ended within ENDED_KEPT too (the status poll's)."""
    moment = now()
    return (moment - ENDED_KEPT if scope == "all" else moment).timestamp()


def _live(item: Batch | TrackedLink | None, ended: bool) -> bool:
    return item is not None and (ended or item.expires_at > now())


def _indexes(requester: Requester) -> dict[Scope, str]:
    """The listing indexes a requester's batch belongs to, by scope."""
    return {"user": USER_INDEX.format(requester.team_id, requester.user_id),
            "channel": CHANNEL_INDEX.format(requester.channel_id), "all": ALL_INDEX}


def url_key(url: str) -> str:
    """A receiver's URL as a short key: the URL itself may carry a secret (Zapier's do)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def link_id(token: str) -> str:
    """A stand-in for the token where it is kept past the link's life (the funnel's 31 days,
    the history's AUDIT_RETENTION_DAYS), which must not hold tokens."""
    return hashlib.sha256(token.encode()).hexdigest()[:20]


def note_key(requester: Requester, note: str) -> str:
    """Customer notes compare trimmed, case and inner spaces ignored; hashed, so any note
    makes a short key."""
    normal = " ".join(note.split()).casefold()
    return NOTE_KEY.format(requester.team_id, requester.user_id,
                           hashlib.sha256(normal.encode()).hexdigest()[:32])


def batch_json(batch: Batch) -> str:
    """A batch as its key holds it: a field left at its default (no CRM reference) costs
    no bytes, and reads back as that default."""
    return batch.model_dump_json(exclude_defaults=True)


def forgotten_until(batch: Batch) -> datetime:
    """How long a mark that something of `batch` was forgotten is kept: its links' life."""
    return max(batch.expires_at, now()) + timedelta(seconds=1)


class StoreUnavailable(Exception):
    """Redis did not answer; nothing was read or written."""


class StoreNotAnswering(StoreUnavailable):
    """Redis gave no answer at all (stopped, restarting, loading its data, too slow): worth
    asking again shortly. A write may have landed all the same, its answer lost."""


def tls_options(url: str, tls_verify: bool = True) -> dict[str, Any]:
    """The TLS part of every connection's options: the one place REDIS_TLS_VERIFY acts.

    With verification off a rediss:// connection is still encrypted, but accepts any
    certificate (a managed Redis that signs its own); someone able to intercept the
    traffic could then pose as the server."""
    if urlsplit(url).scheme == "rediss" and not tls_verify:
        return {"ssl_cert_reqs": None}  # redis-py also skips the host name check then
    return {}


def connect(url: str, *, tls_verify: bool = True, decode_responses: bool = True,
            socket_timeout: float = 2, health_check_interval: int = 15) -> Redis:
    """A client that fails fast when Redis is down and reconnects by itself when it is back.

    Every Redis connection of the bot (store, RQ, doctor, start-up wait) is made here."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=2,
        health_check_interval=health_check_interval,
        decode_responses=decode_responses,
        **tls_options(url, tls_verify),
    )


def connect_for(settings: Settings, **options: Any) -> Redis:
    """`connect` with the settings' REDIS_URL and REDIS_TLS_VERIFY."""
    if settings.redis_url is None:
        raise ValueError("REDIS_URL must be resolved (embedded Redis started) first")
    return connect(settings.redis_url, tls_verify=settings.redis_tls_verify, **options)


@contextmanager
def redis_errors() -> Iterator[None]:
    """Any Redis failure inside becomes StoreUnavailable, which users get explained; no
    answer at all (a connection refused or timed out) becomes StoreNotAnswering."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError):
        raise StoreNotAnswering("Redis is not answering") from None
    except redis.RedisError:
        raise StoreUnavailable("Redis is not answering") from None


# What a store call raises when Redis fails, wherever it surfaces: through `redis_errors`,
# or raw from a client no one wrapped (RQ's scheduling, say).
STORE_FAILURES = (StoreUnavailable, redis.RedisError)


def not_answering(error: BaseException) -> bool:
    """Whether `error` means Redis gave no answer (so asking again may work), however the
    store surfaced it."""
    return isinstance(error, StoreNotAnswering | redis.ConnectionError | redis.TimeoutError)


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 in UTC, with a Z: 2026-12-07T09:30:00Z (webhook events, the report's CSV)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class TokenStore:
    def __init__(self, client: Redis) -> None:
        self.redis = client

    def ensure_available(self) -> None:
        with redis_errors():
            self.redis.ping()

    def write(self, batch: Batch, links: Sequence[TrackedLink]) -> None:
        """Record `batch` as it now is, with `links` of it, in one transaction."""
        ttl = max(1, int((batch.expires_at + ENDED_KEPT - now()).total_seconds()))
        with redis_errors(), self.redis.pipeline(transaction=True) as pipe:
            pipe.set(BATCH_KEY.format(batch.batch_id), batch_json(batch), ex=ttl)
            for item in links:
                pipe.set(TOKEN_KEY.format(item.token), item.model_dump_json(), ex=ttl)
            for scope, index in _indexes(batch.requester).items():
                # Pruned as it is written, not only when someone lists it; its TTL is its
                # newest member's: this batch's.
                pipe.zremrangebyscore(index, "-inf", _kept_from(scope))
                pipe.zadd(index, {batch.batch_id: batch.expires_at.timestamp()})
                pipe.expire(index, ttl)
            pipe.execute()

    def first_time(self, key: str, ttl: timedelta) -> bool:
        """True the first time `key` is seen within `ttl` (e.g. to ignore a double click)."""
        with redis_errors():
            return bool(self.redis.set(ONCE_KEY.format(key), "1", nx=True, ex=ttl))

    def forget_once(self, key: str) -> None:
        """`key` was not done after all: the next `first_time(key)` is True again."""
        with redis_errors():
            self.redis.delete(ONCE_KEY.format(key))

    def note_index_get(self, requester: Requester, note: str) -> str | None:
        """The id of `requester`'s newest live batch for this customer note, if any."""
        with redis_errors():
            batch_id = self.redis.get(note_key(requester, note))
        return str(batch_id) if batch_id else None

    def note_index_set(self, batch: Batch) -> None:
        """`batch` is now its requester's newest for its note, until it expires."""
        with redis_errors():
            self.redis.set(note_key(batch.requester, batch.note), batch.batch_id,
                           exat=int(batch.expires_at.timestamp()))

    def mark_forgotten(self, key: str, batch: Batch) -> None:
        """`key` (a batch id or a token of `batch`) was forgotten, not merely expired."""
        with redis_errors():
            self.redis.set(FORGOTTEN_KEY.format(key), "1",
                           exat=int(forgotten_until(batch).timestamp()))

    def is_forgotten(self, key: str) -> bool:
        with redis_errors():
            return bool(self.redis.exists(FORGOTTEN_KEY.format(key)))

    def get_link(self, token: str, *, ended: bool = False) -> TrackedLink | None:
        """The link while it lives (`ended`: also in the ENDED_KEPT after)."""
        with redis_errors():
            raw = self.redis.get(TOKEN_KEY.format(token))
        link = TrackedLink.model_validate_json(raw) if raw else None
        return link if _live(link, ended) else None

    def get_batch(self, batch_id: str, *, ended: bool = False) -> Batch | None:
        """The batch while its links live (`ended`: also in the ENDED_KEPT after)."""
        with redis_errors():
            raw = self.redis.get(BATCH_KEY.format(batch_id))
        batch = Batch.model_validate_json(raw) if raw else None
        return batch if _live(batch, ended) else None

    def live_batches(self, scope: Scope, requester: Requester, limit: int) -> Listing:
        """The `limit` newest batches not yet expired nor forgotten, and the count of all."""
        index = _indexes(requester)[scope]
        moment = now().timestamp()
        with redis_errors():
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(index, "-inf", _kept_from(scope))
                pipe.zrevrangebyscore(index, "+inf", f"({moment}", start=0, num=limit)
                pipe.zcount(index, f"({moment}", "+inf")
                _, ids, total = pipe.execute()
            raws = self.redis.mget([BATCH_KEY.format(i) for i in ids]) if ids else []
        return Listing([Batch.model_validate_json(raw) for raw in raws if raw], total)

    def all_live_batches(self, limit: int) -> list[Batch]:
        """The `limit` live batches that expire last (the newest), everyone's."""
        return self._all_between(f"({now().timestamp()}", "+inf", limit)

    def ended_batches(self, limit: int) -> list[Batch]:
        """Batches whose links' 24 h ended within ENDED_KEPT (the status poll's last look),
        those that ended first first: `limit` of them."""
        moment = now()
        return self._all_between((moment - ENDED_KEPT).timestamp(), moment.timestamp(), limit,
                                 oldest_first=True)

    def _all_between(self, low: float | str, high: float | str, limit: int,
                     oldest_first: bool = False) -> list[Batch]:
        with redis_errors():
            ids = (self.redis.zrangebyscore(ALL_INDEX, low, high, start=0, num=limit)
                   if oldest_first else
                   self.redis.zrevrangebyscore(ALL_INDEX, high, low, start=0, num=limit))
            raws = self.redis.mget([BATCH_KEY.format(i) for i in ids]) if ids else []
        return [Batch.model_validate_json(raw) for raw in raws if raw]

    def forget_batch(self, batch: Batch) -> None:
        with redis_errors(), self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(BATCH_KEY.format(batch.batch_id),
                        *(TOKEN_KEY.format(t) for t in batch.tokens))
            for index in _indexes(batch.requester).values():
                pipe.zrem(index, batch.batch_id)
            pipe.execute()

    def forget_link(self, link: TrackedLink) -> Batch | None:
        """Drop one link; its batch without it, or None when that was the batch's last."""
        batch = self.get_batch(link.batch_id)
        if batch is None or batch.tokens == [link.token]:
            if batch is not None:
                self.forget_batch(batch)
            with redis_errors():
                self.redis.delete(TOKEN_KEY.format(link.token))
            return None
        batch.tokens = [t for t in batch.tokens if t != link.token]
        with redis_errors(), self.redis.pipeline(transaction=True) as pipe:
            pipe.set(BATCH_KEY.format(batch.batch_id), batch_json(batch), keepttl=True)
            pipe.delete(TOKEN_KEY.format(link.token))
            pipe.execute()
        return batch

    def links_of(self, batch: Batch, *, ended: bool = False) -> list[TrackedLink]:
        """`batch`'s links that live (`ended`: also those in the ENDED_KEPT after)."""
        with redis_errors():
            raws = self.redis.mget([TOKEN_KEY.format(t) for t in batch.tokens])
        links = (TrackedLink.model_validate_json(raw) for raw in raws if raw)
        return [link for link in links if _live(link, ended)]


class BatchWriter(Protocol):
    def write(self, batch: Batch, links: Sequence[TrackedLink]) -> None:
        """Record `batch` as it now is, with `links` of it, at once."""


class BatchRecorder:
    """One command's batch, recorded the moment Exotel returns each of its links, so that a
    worker that dies half-way leaves every link it got tracked (and findable by batch id)."""

    def __init__(self, store: BatchWriter, batch: Batch) -> None:
        self.batch = batch
        self.links: list[TrackedLink] = []
        self._store = store
        self._lock = threading.Lock()  # links arrive on several threads of one command

    @classmethod
    def start(cls, store: BatchWriter, requester: Requester, note: str, batch_id: str,
              reminder_lead: timedelta, customer_ref: str = "") -> BatchRecorder:
        """A new batch, issued now, with no link yet."""
        issued_at = now()
        expires_at = issued_at + LINK_TTL
        return cls(store, Batch(batch_id=batch_id, requester=requester, note=note, tokens=[],
                                issued_at=issued_at, expires_at=expires_at,
                                reminder_due=expires_at - reminder_lead,
                                customer_ref=customer_ref))

    def add(self, link: OnboardingLink) -> TrackedLink:
        """Record `link` in the batch. Again for a link added already, nothing is written; a
        retry after a write whose answer was lost writes the batch once more, the token in it
        once (the batch kept here grows only when the store said yes)."""
        with self._lock:
            known = next((t for t in self.links if t.token == link.token), None)
            if known is not None:
                return known
            batch = self.batch
            tracked = self.link_of(link)
            grown = batch.model_copy(update={"tokens": [*batch.tokens, link.token]})
            self._store.write(grown, [tracked])
            self.batch = grown
            self.links.append(tracked)
            return tracked

    def link_of(self, link: OnboardingLink) -> TrackedLink:
        """`link` as this batch records it (nothing is written)."""
        batch = self.batch
        return TrackedLink(token=link.token, url=link.url, batch_id=batch.batch_id,
                           requester=batch.requester, note=batch.note,
                           issued_at=batch.issued_at, expires_at=batch.expires_at)
