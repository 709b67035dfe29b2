"""What the use cases (`bot.domain.onboarding`) need of the things around them, as protocols.

In production the Redis-backed classes (`TokenStore`, `StatusBook`, `Reminders`, `Audit`,
`LinkQuota`, `SharedRateLimiter`) and `ExotelClient` fill them; the domain's unit tests use
in-memory stand-ins (`testkit.memory`), which mypy checks against the same protocols."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Protocol

from bot.domain.history import Funnel
from bot.domain.models import Batch, Listing, Requester, TrackedLink
from bot.domain.status import LinkStatus
from bot.domain.store import BatchWriter, Scope
from bot.exotel.client import CreateOutcome, OnboardingLink


class LinkStore(BatchWriter, Protocol):
    """Issued links and their batches, each kept as long as its link lives, and the marks
    the use cases keep beside them. Owns every key it writes."""

    def ensure_available(self) -> None:
        """StoreUnavailable unless the store answers."""

    def get_link(self, token: str) -> TrackedLink | None: ...

    def get_batch(self, batch_id: str) -> Batch | None: ...

    def links_of(self, batch: Batch) -> list[TrackedLink]: ...

    def live_batches(self, scope: Scope, requester: Requester, limit: int) -> Listing: ...

    def forget_batch(self, batch: Batch) -> None: ...

    def forget_link(self, link: TrackedLink) -> Batch | None:
        """Drop one link; its batch without it, or None when that was the batch's last."""

    def first_time(self, key: str, ttl: timedelta) -> bool:
        """True the first time `key` is seen within `ttl`."""

    def forget_once(self, key: str) -> None:
        """The next `first_time(key)` is True again."""

    def note_index_get(self, requester: Requester, note: str) -> str | None:
        """The id of `requester`'s newest live batch for this customer note (compared
        trimmed, case and inner spaces ignored), if any."""

    def note_index_set(self, batch: Batch) -> None: ...

    def mark_forgotten(self, key: str, batch: Batch) -> None:
        """`key` (a batch id or a token of `batch`) was forgotten, for its links' life."""

    def is_forgotten(self, key: str) -> bool: ...


class LinkMaker(Protocol):
    """Exotel, as the use cases call it."""

    def create_links(self, count: int,
                     on_link: Callable[[OnboardingLink], object] | None = None
                     ) -> CreateOutcome: ...

    def token_status(self, token: str) -> str: ...


class Statuses(Protocol):
    """Each link's last known status, and the funnel of issued and used links."""

    def issued(self, link: TrackedLink, customer_ref: str = "") -> None:
        """Exotel just returned `link`: VALID as of now, counted as issued, and recorded in
        the history with its batch's CRM reference."""

    def record(self, link: TrackedLink, status: str) -> bool:
        """True if this is the first time `link` is known USED."""

    def get_many(self, tokens: list[str]) -> dict[str, LinkStatus]: ...

    def funnel(self, team_id: str, user_id: str | None) -> Funnel: ...


class ReminderBook(Protocol):
    lead: timedelta

    def schedule(self, batch: Batch) -> datetime: ...

    def stop(self, batch_id: str) -> bool:
        """False if the batch's reminders were stopped already."""


class AuditTrail(Protocol):
    def record(self, action: str, *, team_id: str = "", user_id: str = "", channel_id: str = "",
               outcome: str = "ok", batch_id: str = "", count: int | None = None,
               tokens: Iterable[str] = (), detail: str = "",
               customer_ref: str = "") -> None: ...


class Quota(Protocol):
    def check(self, team_id: str, user_id: str, count: int) -> None:
        """QuotaExceeded unless `count` more links fit the user's quota."""

    def charge(self, team_id: str, user_id: str, token: str) -> None:
        """Count the link of `token` made, once however often asked (retries are safe)."""


class Budget(Protocol):
    """Exotel's shared request budget, as issuing sees it."""

    def wait_for(self, count: int) -> float:
        """Seconds until `count` requests fit (0: now)."""

    def issuing_waits(self, seconds: float) -> None: ...
