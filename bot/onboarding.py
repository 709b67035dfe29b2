"""The bot's use cases: issue tracked onboarding links, and check a token. No Slack here."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from redis import RedisError

from bot.exotel import ExotelClient, ExotelError
from bot.models import Batch, Requester, TrackedLink
from bot.store import StoreUnavailable, TokenStore
from bot.tokens import mask

if TYPE_CHECKING:
    from bot.reminders import Reminders

log = logging.getLogger(__name__)
RENEW_WINDOW = timedelta(minutes=10)  # a second "Renew" click within this is a double click


class BatchGone(Exception):
    """The batch a button refers to has expired and is no longer tracked."""


class NotTracked(Exception):
    """Exotel made links but Redis would not record them, so they are withheld."""

    def __init__(self, created: int) -> None:
        super().__init__(f"{created} links were created but could not be recorded")
        self.created = created


@dataclass
class IssueResult:
    requested: int
    note: str
    batch: Batch | None = None
    links: list[TrackedLink] = field(default_factory=list)
    errors: list[ExotelError] = field(default_factory=list)
    reminder_due: datetime | None = None

    @property
    def failed(self) -> int:
        return self.requested - len(self.links)

    def reasons(self) -> list[tuple[str, int]]:
        """Each distinct failure reason with how many links it cost, commonest first."""
        return Counter(str(e) for e in self.errors).most_common()


@dataclass
class CheckResult:
    token: str
    status: str
    tracked: TrackedLink | None


class Onboarding:
    def __init__(self, exotel: ExotelClient, store: TokenStore, reminders: Reminders) -> None:
        self.exotel = exotel
        self.store = store
        self.reminders = reminders

    def issue(self, requester: Requester, count: int, note: str) -> IssueResult:
        """Create `count` links and track every one that Exotel made.

        Redis is checked first so that no Exotel link is made that could not be tracked.
        """
        self.store.ensure_available()
        outcome = self.exotel.create_links(count)
        result = IssueResult(requested=count, note=note, errors=outcome.errors)
        if outcome.links:
            try:
                result.batch, result.links = self.store.save_batch(requester, note, outcome.links)
                result.reminder_due = self.reminders.schedule(result.batch)
            except (StoreUnavailable, RedisError):
                # Never hand out a link the bot can't remind about or show in listings.
                raise NotTracked(len(outcome.links)) from None
        log.info(
            "issued %d of %d links batch=%s user=%s channel=%s tokens=%s failures=%s",
            len(result.links), count, result.batch.batch_id if result.batch else "-",
            requester.user_id, requester.channel_id,
            ",".join(mask(link.token) for link in result.links), result.reasons(),
        )
        return result

    def check(self, token: str) -> CheckResult:
        self.store.ensure_available()
        status = self.exotel.token_status(token)
        return CheckResult(token=token, status=status, tracked=self.store.get_link(token))

    def renew(self, requester: Requester, batch_id: str) -> IssueResult | None:
        """A fresh batch like `batch_id` for `requester`; None if they just asked for it."""
        if not self.store.first_time(f"renew:{batch_id}:{requester.user_id}", RENEW_WINDOW):
            return None  # a double click
        batch = self.store.get_batch(batch_id)
        if batch is None:
            raise BatchGone(batch_id)
        return self.issue(requester, len(batch.tokens), batch.note)

    def stop_reminders(self, batch_id: str) -> None:
        self.reminders.stop(batch_id)
