"""In-memory stand-ins for what the use cases (`bot.domain.onboarding`) talk to, for the
domain's unit tests: no Redis, no Exotel, no threads. Each fills its protocol in
`bot.domain.ports` (mypy checks `MemoryWorld` against them); time is
`bot.domain.store.now()`, which a test freezes or moves (freezegun). The store's `down` and
`lose` stand for the one Redis: every stand-in of a world fails with it, and recording's
retries wait on `FakeClock`, which moves only when they sleep."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.domain.access import AccessPolicy
from bot.domain.history import Funnel
from bot.domain.models import Batch, Listing, Requester, TrackedLink
from bot.domain.onboarding import Onboarding
from bot.domain.ratelimit import QuotaExceeded
from bot.domain.recording import RecordRetry
from bot.domain.status import LinkStatus
from bot.domain.store import (
    Scope,
    StoreNotAnswering,
    forgotten_until,
    note_key,
    now,
)
from bot.exotel.client import (
    CreateOutcome,
    ExotelError,
    ExotelNotFound,
    OnboardingLink,
)
from bot.settings import Settings
from bot.telemetry.metrics import Metrics


class MemoryStore:
    """`TokenStore` in a dict: every entry lives until its own moment, as its key would."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[Any, datetime]] = {}
        self.down = False  # True: every call fails as it does when Redis does not answer
        # Writes whose next one lands but whose caller hears nothing (an answer lost on the
        # way): "batch", "quota", "status".
        self.lose: list[str] = []

    def _get(self, kind: str, key: str) -> Any:
        self.ensure_available()
        value, until = self._entries.get((kind, key), (None, now()))
        if until <= now():
            self._entries.pop((kind, key), None)
            return None
        return value

    def _set(self, kind: str, key: str, value: Any, until: datetime) -> None:
        self.ensure_available()
        self._entries[(kind, key)] = (value, until)

    def _drop(self, kind: str, key: str) -> None:
        self.ensure_available()
        self._entries.pop((kind, key), None)

    def ensure_available(self) -> None:
        if self.down:
            raise StoreNotAnswering("Redis is not answering")

    def answered(self, write: str) -> None:
        """After a write that landed: its answer lost, if `lose` names it."""
        if write in self.lose:
            self.lose.remove(write)
            raise StoreNotAnswering("Redis is not answering")

    def write(self, batch: Batch, links: Sequence[TrackedLink]) -> None:
        self._set("batch", batch.batch_id, batch.model_copy(), batch.expires_at)
        for link in links:
            self._set("token", link.token, link.model_copy(), batch.expires_at)
        self.answered("batch")

    def get_link(self, token: str) -> TrackedLink | None:
        link: TrackedLink | None = self._get("token", token)
        return link

    def get_batch(self, batch_id: str) -> Batch | None:
        batch: Batch | None = self._get("batch", batch_id)
        return batch.model_copy() if batch else None

    def links_of(self, batch: Batch) -> list[TrackedLink]:
        return [link for link in map(self.get_link, batch.tokens) if link is not None]

    def live_batches(self, scope: Scope, requester: Requester, limit: int) -> Listing:
        def in_scope(batch: Batch) -> bool:
            if scope == "user":
                return (batch.requester.team_id, batch.requester.user_id) == (
                    requester.team_id, requester.user_id)
            return scope == "all" or batch.requester.channel_id == requester.channel_id

        live = [b for kind, key in list(self._entries) if kind == "batch"
                and (b := self.get_batch(key)) is not None and in_scope(b)]
        live.sort(key=lambda b: b.expires_at, reverse=True)
        return Listing(live[:limit], len(live))

    def forget_batch(self, batch: Batch) -> None:
        self._drop("batch", batch.batch_id)
        for token in batch.tokens:
            self._drop("token", token)

    def forget_link(self, link: TrackedLink) -> Batch | None:
        batch = self.get_batch(link.batch_id)
        self._drop("token", link.token)
        if batch is None or batch.tokens == [link.token]:
            if batch is not None:
                self.forget_batch(batch)
            return None
        batch.tokens = [t for t in batch.tokens if t != link.token]
        self._set("batch", batch.batch_id, batch, self._entries[("batch", batch.batch_id)][1])
        return batch

    def first_time(self, key: str, ttl: timedelta) -> bool:
        if self._get("once", key):
            return False
        self._set("once", key, True, now() + ttl)
        return True

    def forget_once(self, key: str) -> None:
        self._drop("once", key)

    def note_index_get(self, requester: Requester, note: str) -> str | None:
        batch_id: str | None = self._get("note", note_key(requester, note))
        return batch_id

    def note_index_set(self, batch: Batch) -> None:
        self._set("note", note_key(batch.requester, batch.note), batch.batch_id,
                  batch.expires_at)

    def mark_forgotten(self, key: str, batch: Batch) -> None:
        self._set("forgotten", key, True, forgotten_until(batch))

    def is_forgotten(self, key: str) -> bool:
        return bool(self._get("forgotten", key))


class Killed(BaseException):
    """The worker died (SIGKILL) in the middle of a command: nothing after runs."""


@dataclass
class FakeExotel:
    """Makes links at once; `script` says what becomes of the next requests, in order: None
    makes a link, an error fails it, `Killed` ends the command right there. `meanwhile`: what
    happens in the world while each next link is made (Redis stopping, say), in order."""

    script: list[ExotelError | Killed | None] = field(default_factory=list)
    made: list[OnboardingLink] = field(default_factory=list)
    status_of: dict[str, str] = field(default_factory=dict)  # a made link's, VALID if none
    meanwhile: list[Callable[[], object] | None] = field(default_factory=list)

    def create_links(self, count: int,
                     on_link: Callable[[OnboardingLink], object] | None = None
                     ) -> CreateOutcome:
        outcome = CreateOutcome()
        for _ in range(count):
            step = self.script.pop(0) if self.script else None
            if isinstance(step, Killed):
                raise step
            if step is not None:
                outcome.errors.append(step)
                continue
            happens = self.meanwhile.pop(0) if self.meanwhile else None
            if happens is not None:
                happens()
            token = str(uuid.uuid4())
            link = OnboardingLink(url=f"https://messaging.exotel.com/onboard?token={token}",
                                  token=token)
            self.made.append(link)
            # As ExotelClient: a link made is returned, whatever on_link did.
            with contextlib.suppress(Exception):
                if on_link is not None:
                    on_link(link)
            outcome.links.append(link)
        return outcome

    def token_status(self, token: str) -> str:
        if token not in {link.token for link in self.made}:
            raise ExotelNotFound("Exotel does not know this token.")
        return self.status_of.get(token, "VALID")


@dataclass
class MemoryStatuses:
    records: dict[str, LinkStatus] = field(default_factory=dict)
    issued_links: list[TrackedLink] = field(default_factory=list)
    redis: MemoryStore = field(default_factory=MemoryStore)  # the world's, for its outages

    def issued(self, link: TrackedLink, customer_ref: str = "") -> None:
        self.redis.ensure_available()
        self.records[link.token] = LinkStatus(status="VALID", checked_at=now())
        if link not in self.issued_links:  # the funnel counts a link once, as StatusBook
            self.issued_links.append(link)
        self.redis.answered("status")

    def record(self, link: TrackedLink, status: str) -> bool:
        previous = self.records.get(link.token)
        newly_used = status == "USED" and (previous is None or previous.used_at is None)
        used_at = now() if newly_used else previous.used_at if previous else None
        self.records[link.token] = LinkStatus(status=status, checked_at=now(), used_at=used_at)
        return newly_used

    def get_many(self, tokens: list[str]) -> dict[str, LinkStatus]:
        return {t: self.records[t] for t in tokens if t in self.records}

    def funnel(self, team_id: str, user_id: str | None) -> Funnel:
        links = [lk for lk in self.issued_links if lk.requester.team_id == team_id
                 and user_id in (None, lk.requester.user_id)]
        used = [lk for lk in links if self.records[lk.token].used_at is not None]
        return Funnel(issued=len(links), used=len(used), expired=0, median_to_used=None)


@dataclass
class MemoryReminders:
    lead: timedelta = timedelta(hours=1)
    scheduled: dict[str, datetime] = field(default_factory=dict)  # batch id: when due
    stopped: set[str] = field(default_factory=set)
    redis: MemoryStore = field(default_factory=MemoryStore)

    def schedule(self, batch: Batch) -> datetime:
        self.redis.ensure_available()
        due = batch.reminder_due or batch.expires_at - self.lead
        self.scheduled[batch.batch_id] = due
        return due

    def stop(self, batch_id: str) -> bool:
        first = batch_id not in self.stopped
        self.stopped.add(batch_id)
        return first


@dataclass
class MemoryAudit:
    entries: list[dict[str, Any]] = field(default_factory=list)
    redis: MemoryStore = field(default_factory=MemoryStore)

    def record(self, action: str, *, team_id: str = "", user_id: str = "", channel_id: str = "",
               outcome: str = "ok", batch_id: str = "", count: int | None = None,
               tokens: Iterable[str] = (), detail: str = "", customer_ref: str = "") -> None:
        self.redis.ensure_available()
        self.entries.append({"action": action, "outcome": outcome, "user_id": user_id,
                             "batch_id": batch_id, "count": count, "tokens": list(tokens),
                             "detail": detail, "customer_ref": customer_ref})

    def outcomes(self, action: str) -> list[str]:
        return [e["outcome"] for e in self.entries if e["action"] == action]


@dataclass
class MemoryQuota:
    """At most `per_day` links per user; the day never rolls over here."""

    per_day: int = 200
    charged: dict[tuple[str, str], int] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)  # charged already: as LinkQuota's marks
    redis: MemoryStore = field(default_factory=MemoryStore)

    def check(self, team_id: str, user_id: str, count: int) -> None:
        self.redis.ensure_available()
        remaining = self.per_day - self.charged.get((team_id, user_id), 0)
        if count > remaining:
            raise QuotaExceeded(self.per_day, remaining, now() + timedelta(days=1))

    def charge(self, team_id: str, user_id: str, token: str) -> None:
        self.redis.ensure_available()
        if token not in self.tokens:
            self.tokens.add(token)
            self.charged[(team_id, user_id)] = self.charged.get((team_id, user_id), 0) + 1
        self.redis.answered("quota")


@dataclass
class MemoryBudget:
    wait: float = 0.0  # what `wait_for` answers
    issuing_waited: list[float] = field(default_factory=list)

    def wait_for(self, count: int) -> float:
        return self.wait

    def issuing_waits(self, seconds: float) -> None:
        self.issuing_waited.append(seconds)


class NoGroups:
    def members(self, group_id: str, deadline: float) -> frozenset[str] | None:
        return None


@dataclass
class FakeClock:
    """Monotonic time for recording's retries: only `sleep` moves it, at once. `at(t, then)`
    runs `then` when the clock reaches `t` (Redis coming back, say)."""

    now: float = 0.0
    slept: list[float] = field(default_factory=list)
    due: list[tuple[float, Callable[[], None]]] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept.append(seconds)
        for entry in [entry for entry in self.due if entry[0] <= self.now]:
            self.due.remove(entry)
            entry[1]()

    def at(self, when: float, then: Callable[[], None]) -> None:
        self.due.append((when, then))


@dataclass
class MemoryWorld:
    """`Onboarding` wired to the stand-ins above, each at hand for a test to look into;
    recording is tried for `record_within` seconds of `retry_clock`."""

    admins: list[str] = field(default_factory=list)
    store: MemoryStore = field(default_factory=MemoryStore)
    exotel: FakeExotel = field(default_factory=FakeExotel)
    reminders: MemoryReminders = field(default_factory=MemoryReminders)
    audit: MemoryAudit = field(default_factory=MemoryAudit)
    quota: MemoryQuota = field(default_factory=MemoryQuota)
    budget: MemoryBudget = field(default_factory=MemoryBudget)
    statuses: MemoryStatuses = field(default_factory=MemoryStatuses)
    retry_clock: FakeClock = field(default_factory=FakeClock)
    record_within: float = 30.0

    def __post_init__(self) -> None:
        for part in (self.statuses, self.reminders, self.audit, self.quota):
            part.redis = self.store  # one Redis: down for each when down for the store
        access = AccessPolicy(Settings.model_construct(admin_user_ids=self.admins), NoGroups())
        recording = RecordRetry(within=self.record_within, clock=self.retry_clock.monotonic,
                                sleep=self.retry_clock.sleep)
        self.onboarding = Onboarding(self.exotel, self.store, self.reminders, self.audit,
                                     self.quota, Metrics(), self.budget, self.statuses, access,
                                     recording)
