"""What became of each link: its last Exotel status, kept for the link's life.

Exotel has no webhook, so a link's fate is learnt by asking (`bot.slack.poller`, /check-token, the
reminder). This is the one place a status changes; what outlives the link (its record, App
Home's 30-day funnel) is the history's (`bot.domain.history`), written from here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel
from redis import Redis

from bot.domain.history import Funnel, History
from bot.domain.models import TrackedLink
from bot.domain.store import now, redis_errors

if TYPE_CHECKING:
    from bot.domain.events import LinkEvents

STATUS_KEY = "onboard:status:{}"
AFTER_LINK = timedelta(hours=1)  # a status outlives its link by this, for late readers
DONE = {"USED", "EXPIRED"}  # nothing more to learn: polled no more


class LinkStatus(BaseModel):
    """Exotel's last word on a link, and when it was asked."""

    status: str
    checked_at: datetime
    used_at: datetime | None = None
    notified: bool = False  # the requester was told it turned USED


class StatusBook:
    def __init__(self, client: Redis, events: LinkEvents | None = None,
                 history: History | None = None) -> None:
        self.redis = client
        self.events = events  # link.used and link.expired, when a status first says so
        self.history = history  # each link's record, kept AUDIT_RETENTION_DAYS

    def get(self, token: str) -> LinkStatus | None:
        with redis_errors():
            raw = self.redis.get(STATUS_KEY.format(token))
        return LinkStatus.model_validate_json(raw) if raw else None

    def get_many(self, tokens: list[str]) -> dict[str, LinkStatus]:
        if not tokens:
            return {}
        with redis_errors():
            raws = self.redis.mget([STATUS_KEY.format(t) for t in tokens])
        return {t: LinkStatus.model_validate_json(r) for t, r in zip(tokens, raws, strict=True)
                if r}

    def record(self, link: TrackedLink, status: str, customer_ref: str | None = None) -> bool:
        """Keep what Exotel said of `link` (`customer_ref`: its batch's, when the caller has
        it); True if this is the first time it said USED.

        The one place a link's status changes: a first USED brings `link.used`, a first
        EXPIRED of a link never seen USED brings `link.expired`."""
        previous = self.get(link.token)
        moment = now()
        used_at = previous.used_at if previous else None
        newly_used = status == "USED" and used_at is None
        newly_expired = (status == "EXPIRED" and used_at is None
                         and (previous is None or previous.status != "EXPIRED"))
        if newly_used:
            used_at = moment
        record = LinkStatus(status=status, checked_at=moment, used_at=used_at,
                            notified=bool(previous and previous.notified))
        self._save(link, record)
        if self.history is not None and newly_used:
            self.history.used(link, moment)
        elif self.history is not None and newly_expired:
            self.history.expired(link)
        if self.events is not None and newly_used:
            self.events.used(link, moment, customer_ref)
        elif self.events is not None and newly_expired:
            self.events.expired(link, customer_ref)
        return newly_used

    def mark_notified(self, link: TrackedLink) -> None:
        record = self.get(link.token)
        if record is not None:
            self._save(link, record.model_copy(update={"notified": True}))

    def _save(self, link: TrackedLink, record: LinkStatus) -> None:
        end = int((max(link.expires_at, now()) + AFTER_LINK).timestamp())
        with redis_errors():
            self.redis.set(STATUS_KEY.format(link.token), record.model_dump_json(), exat=end)

    # What the history keeps.

    def issued(self, link: TrackedLink, customer_ref: str = "") -> None:
        """Exotel just returned `link`: VALID as of now (not "not checked yet"), and its
        record in the history (with the batch's CRM reference), which App Home's funnel
        counts."""
        self._save(link, LinkStatus(status="VALID", checked_at=now()))
        if self.history is not None:
            self.history.issued(link, customer_ref)

    def funnel(self, team_id: str, user_id: str | None) -> Funnel:
        """The last 30 days of `user_id`'s links (the whole team's if None)."""
        if self.history is None:
            return Funnel(issued=0, used=0, expired=0, median_to_used=None)
        return self.history.funnel(team_id, user_id)
