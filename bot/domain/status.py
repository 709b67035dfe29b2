"""What became of each link: its last Exotel status, and the 30-day funnel of the bot's links.

Exotel has no webhook, so a link's fate is learnt by asking (`bot.slack.poller`, /check-token, the
reminder). The last answer is kept per token for the link's life; the funnel keeps, per team,
which links were issued and which turned USED, for 31 days, so it outlives the links.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from redis import Redis

from bot.domain.models import TrackedLink
from bot.domain.store import link_id, now, redis_errors
from bot.settings import LINK_TTL

if TYPE_CHECKING:
    from bot.domain.events import LinkEvents
    from bot.domain.history import History

STATUS_KEY = "onboard:status:{}"
# Per team: links issued (member "user|id", score issued at) and turned USED (score used at).
FUNNEL_ISSUED = "onboard:funnel:issued:{}"
FUNNEL_USED = "onboard:funnel:used:{}"
FUNNEL_DAYS = 30
FUNNEL_KEPT = timedelta(days=FUNNEL_DAYS + 1)
AFTER_LINK = timedelta(hours=1)  # a status outlives its link by this, for late readers
DONE = {"USED", "EXPIRED"}  # nothing more to learn: polled no more


class LinkStatus(BaseModel):
    """Exotel's last word on a link, and when it was asked."""

    status: str
    checked_at: datetime
    used_at: datetime | None = None
    notified: bool = False  # the requester was told it turned USED


@dataclass
class Funnel:
    issued: int
    used: int
    expired: int
    median_to_used: timedelta | None
    days: int = FUNNEL_DAYS


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

    def record(self, link: TrackedLink, status: str) -> bool:
        """Keep what Exotel said of `link`; True if this is the first time it said USED.

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
        if newly_used:
            self._funnel_used(link, moment)
        if self.history is not None and newly_used:
            self.history.used(link, moment)
        elif self.history is not None and newly_expired:
            self.history.expired(link)
        if self.events is not None and newly_used:
            self.events.used(link, moment)
        elif self.events is not None and newly_expired:
            self.events.expired(link)
        return newly_used

    def mark_notified(self, link: TrackedLink) -> None:
        record = self.get(link.token)
        if record is not None:
            self._save(link, record.model_copy(update={"notified": True}))

    def _save(self, link: TrackedLink, record: LinkStatus) -> None:
        end = int((max(link.expires_at, now()) + AFTER_LINK).timestamp())
        with redis_errors():
            self.redis.set(STATUS_KEY.format(link.token), record.model_dump_json(), exat=end)

    # The funnel.

    def issued(self, link: TrackedLink, customer_ref: str = "") -> None:
        """Exotel just returned `link`: VALID as of now (not "not checked yet"), one more
        issued in the funnel, and its record in the history (with the batch's CRM
        reference)."""
        self._save(link, LinkStatus(status="VALID", checked_at=now()))
        self._funnel_add(FUNNEL_ISSUED, link, link.issued_at, nx=False)
        if self.history is not None:
            self.history.issued(link, customer_ref)

    def _funnel_used(self, link: TrackedLink, moment: datetime) -> None:
        self._funnel_add(FUNNEL_USED, link, moment, nx=True)  # counted once

    def _funnel_add(self, key: str, link: TrackedLink, moment: datetime, nx: bool) -> None:
        name = key.format(link.requester.team_id)
        member = f"{link.requester.user_id}|{link_id(link.token)}"
        with redis_errors(), self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(name, {member: moment.timestamp()}, nx=nx)
            pipe.zremrangebyscore(name, "-inf", (now() - FUNNEL_KEPT).timestamp())
            pipe.expire(name, FUNNEL_KEPT)
            pipe.execute()

    def funnel(self, team_id: str, user_id: str | None) -> Funnel:
        """The last 30 days of `user_id`'s links (the whole team's if None)."""
        moment = now()
        since = (moment - timedelta(days=FUNNEL_DAYS)).timestamp()
        with redis_errors():
            issued: list[Any] = self.redis.zrangebyscore(
                FUNNEL_ISSUED.format(team_id), since, "+inf", withscores=True)
            # With withscores, redis-py answers pairs; its annotation allows flat lists too.
            used: dict[Any, Any] = dict(self.redis.zrangebyscore(  # type: ignore[arg-type]
                FUNNEL_USED.format(team_id), since, "+inf", withscores=True))
        prefix = f"{user_id}|" if user_id else ""
        durations: list[float] = []
        count = expired = 0
        for member, issued_at in issued:
            if not member.startswith(prefix):
                continue
            count += 1
            if member in used:
                durations.append(max(0.0, used[member] - issued_at))
            elif issued_at + LINK_TTL.total_seconds() <= moment.timestamp():
                expired += 1
        median = timedelta(seconds=statistics.median(durations)) if durations else None
        return Funnel(issued=count, used=len(durations), expired=expired,
                      median_to_used=median)
