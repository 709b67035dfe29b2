"""The bot's use cases: issue, check, renew, share, list and forget links. No Slack here."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.domain.models import Batch, Listing, Requester, TrackedLink
from bot.domain.ratelimit import QuotaExceeded
from bot.domain.store import BatchRecorder, Scope, StoreUnavailable, now, redis_errors
from bot.exotel.client import (
    ExotelError,
    ExotelNotFound,
    ExotelRateLimited,
    OnboardingLink,
)
from bot.exotel.tokens import mask

if TYPE_CHECKING:
    from bot.domain.access import AccessPolicy
    from bot.domain.ports import (
        AuditTrail,
        Budget,
        LinkMaker,
        LinkStore,
        Quota,
        ReminderBook,
        Statuses,
    )
    from bot.domain.status import LinkStatus
    from bot.telemetry.metrics import Metrics

log = logging.getLogger(__name__)
RENEW_WINDOW = timedelta(minutes=10)  # a second "Renew" click within this is a double click
# A wait this short for Exotel's budget is slept through; a longer one is queued for.
BUDGET_NAP = 2.0


class BatchGone(Exception):
    """The batch a button refers to has expired or was forgotten."""


class AlreadyForgotten(BatchGone):
    """The batch or link was forgotten already (by this user or another)."""


class NotYours(Exception):
    """Only the requester (or an admin) may do this to a batch."""


class BudgetWait(Exception):
    """Exotel's shared request budget has no room for this command for `seconds`."""

    def __init__(self, seconds: float, count: int) -> None:
        super().__init__(f"Exotel's request budget is spent for {seconds:.0f} s")
        self.seconds = seconds
        self.count = count


class Interrupted(ExotelError):
    """Why a link was not made: the worker making it stopped (killed) half-way."""

    def __init__(self) -> None:
        super().__init__("The bot was interrupted before it could make this link; nothing "
                         "was charged for it. Please issue it again.")


@dataclass
class IssueResult:
    requested: int
    note: str
    batch: Batch | None = None
    links: list[TrackedLink] = field(default_factory=list)
    errors: list[ExotelError] = field(default_factory=list)

    @property
    def reminder_due(self) -> datetime | None:
        return self.batch.reminder_due if self.batch else None

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


@dataclass
class Forgotten:
    """What `forget` dropped: a whole batch, or one link of it."""

    batch: Batch
    token: str | None = None


class Onboarding:
    def __init__(self, exotel: LinkMaker, store: LinkStore, reminders: ReminderBook,
                 audit: AuditTrail, quota: Quota, metrics: Metrics, budget: Budget,
                 statuses: Statuses, access: AccessPolicy) -> None:
        self.exotel = exotel
        self.statuses = statuses
        self.access = access  # who may act on a batch
        self.budget = budget
        self.store = store
        self.reminders = reminders
        self.audit = audit
        self.quota = quota
        self.metrics = metrics

    def issue(self, requester: Requester, count: int, note: str, action: str = "issue",
              batch_id: str | None = None) -> IssueResult:
        """Create `count` links and track every one the moment Exotel returns it.

        Redis is asked first (for the quota, so it is known to answer) so that no Exotel
        link is made that could not be tracked. `batch_id` names the batch before any link
        exists, so that whoever finds a command cut short can account for what it made.
        """
        with redis_errors():
            try:
                self.quota.check(requester.team_id, requester.user_id, count)
            except QuotaExceeded as refused:
                self._record(action, requester, None, count=count, outcome="quota",
                             detail=str(refused))
                raise
            wait = self.budget.wait_for(count)
        if wait > BUDGET_NAP:
            with redis_errors():  # the window it waits for is all issuing's: no polls take any
                self.budget.issuing_waits(wait + BUDGET_NAP)
            raise BudgetWait(wait, count)
        time.sleep(wait)
        recorder = BatchRecorder.start(self.store, requester, note,
                                       batch_id or uuid.uuid4().hex, self.reminders.lead)

        def record(link: OnboardingLink) -> None:
            tracked = recorder.add(link)
            with redis_errors():
                self.quota.charge(requester.team_id, requester.user_id)
            self.statuses.issued(tracked)  # VALID: Exotel just returned it

        started = time.monotonic()
        outcome = self.exotel.create_links(count, on_link=record)
        exotel_seconds = round(time.monotonic() - started, 3)
        result = IssueResult(requested=count, note=note, errors=outcome.errors)
        if recorder.links:
            result.batch, result.links = recorder.batch, list(recorder.links)
            self.reminders.schedule(result.batch)
            if result.batch.note.strip():
                self.store.note_index_set(result.batch)
        self._issued(action, requester, result, exotel_seconds)
        return result

    def existing(self, requester: Requester, count: int,
                 note: str) -> tuple[Batch, list[tuple[TrackedLink, LinkStatus | None]]] | None:
        """The requester's live links for this customer, if `count` of them are still
        unused: issuing again would only spend Exotel's budget. Never calls Exotel."""
        if not note.strip():
            return None
        batch_id = self.store.note_index_get(requester, note)
        batch = self.store.get_batch(batch_id) if batch_id else None
        if batch is None:
            return None
        links = self.store.links_of(batch)
        records = self.statuses.get_many([lk.token for lk in links])
        live = [(lk, records.get(lk.token)) for lk in links
                if (records.get(lk.token) is None
                    or records[lk.token].status not in ("USED", "EXPIRED"))]
        if len(live) < count:
            return None
        self._record("issue_repeat", requester, batch, count=len(live),
                     tokens=[mask(lk.token) for lk, _ in live], detail="existing links shown")
        return batch, live

    def details(self, listing: Listing) -> dict[str, list[tuple[TrackedLink, LinkStatus | None]]]:
        """Each listed batch's links with their last known status."""
        found: dict[str, list[tuple[TrackedLink, LinkStatus | None]]] = {}
        for batch in listing.batches:
            links = self.store.links_of(batch)
            records = self.statuses.get_many([lk.token for lk in links])
            found[batch.batch_id] = [(lk, records.get(lk.token)) for lk in links]
        return found

    def account_for(self, requester: Requester, count: int, note: str,
                    batch_id: str) -> IssueResult:
        """What a command cut short (its worker died) had made: every link it recorded,
        now with its reminder, and the rest counted as not made. Never calls Exotel."""
        batch = self.store.get_batch(batch_id)
        links = self.store.links_of(batch) if batch else []
        missing = count - len(links)
        result = IssueResult(requested=count, note=note, links=links,
                             errors=[Interrupted() for _ in range(missing)])
        if batch and links:
            result.batch = batch
            self.reminders.schedule(batch)  # the same job id: at most one reminder
        self._issued("issue_interrupted", requester, result, 0.0)
        return result

    def _issued(self, action: str, requester: Requester, result: IssueResult,
                exotel_seconds: float) -> None:
        self.metrics.links_issued(len(result.links))
        masked = [mask(link.token) for link in result.links]
        status = "ok" if not result.errors else f"{result.failed} failed"
        log.debug("%s: %d of %d links, tokens %s, failures %s", action, len(result.links),
                  result.requested, ",".join(masked), result.reasons(),
                  extra=_fields(action, requester, status, exotel_seconds, result.batch))
        self._record(action, requester, result.batch, count=len(result.links), tokens=masked,
                     outcome=status)

    def check(self, requester: Requester, token: str) -> CheckResult:
        self.store.ensure_available()
        started = time.monotonic()
        try:
            status = self.exotel.token_status(token)
        except ExotelError as error:
            self._record("check", requester, None, tokens=[mask(token)],
                         outcome=_check_outcome(error), detail=type(error).__name__)
            raise
        log.debug("check: %s is %s", mask(token), status, extra=_fields(
            "check", requester, status, round(time.monotonic() - started, 3), None))
        self._record("check", requester, None, tokens=[mask(token)], detail=status)
        tracked = self.store.get_link(token)
        if tracked is not None:
            self.statuses.record(tracked, status)
        return CheckResult(token=token, status=status, tracked=tracked)

    def renew(self, requester: Requester, batch_id: str, new_batch_id: str | None = None,
              again: bool = False) -> IssueResult | None:
        """A fresh batch like `batch_id` for `requester`; None if they just asked for it.

        `again`: this is the same click come back after waiting for Exotel's budget."""
        if not again and not self.store.first_time(f"renew:{batch_id}:{requester.user_id}",
                                                   RENEW_WINDOW):
            return None  # a double click
        batch = self.store.get_batch(batch_id)
        if batch is None:
            self._record("renew", requester, None, batch_id=batch_id, outcome="gone")
            raise BatchGone(batch_id)
        return self.issue(requester, len(batch.tokens), batch.note, action="renew",
                          batch_id=new_batch_id)

    def stop_reminders(self, requester: Requester, batch_id: str,
                       is_admin: bool = False) -> bool:
        """False if they were stopped already (a second click): each click is audited."""
        batch = self._own_batch(requester, batch_id, is_admin, "stop_reminders")
        first = self.reminders.stop(batch.batch_id)
        self._record("stop_reminders", requester, batch, outcome="ok" if first else "already")
        return first

    def live(self, requester: Requester, scope: Scope, limit: int) -> Listing:
        return self.store.live_batches(scope, requester, limit)

    def share(self, requester: Requester, batch_id: str,
              is_admin: bool = False) -> tuple[Batch, list[TrackedLink]]:
        batch = self._own_batch(requester, batch_id, is_admin, "share")
        links = self.store.links_of(batch)
        self._record("share", requester, batch, count=len(links),
                     tokens=[mask(link.token) for link in links])
        return batch, links

    def share_once(self, requester: Requester, batch_id: str,
                   is_admin: bool = False) -> tuple[Batch, list[TrackedLink]] | None:
        """`share`, or None if the batch was posted already (a second click)."""
        batch = self._own_batch(requester, batch_id, is_admin, "share")
        if not self.store.first_time(f"shared:{batch_id}", batch.expires_at - now()
                                     + timedelta(seconds=1)):
            self._record("share", requester, batch, outcome="already")
            return None
        return self.share(requester, batch_id, is_admin)

    def share_failed(self, batch_id: str) -> None:
        """The post did not happen: a later click may try again."""
        self.store.forget_once(f"shared:{batch_id}")

    def forget(self, requester: Requester, *, token: str | None = None,
               batch_id: str | None = None, is_admin: bool = False) -> Forgotten:
        """Stop tracking a batch, or one link of it, and its reminder when nothing is left."""
        if token is not None:
            link = self.store.get_link(token)
            if link is None:
                self._already_forgotten(requester, token, tokens=[mask(token)])
                self._record("forget", requester, None, tokens=[mask(token)], outcome="gone")
                raise BatchGone(mask(token))
            batch = self._own_batch(requester, link.batch_id, is_admin, "forget")
            remaining = self.store.forget_link(link)
            self.store.mark_forgotten(token, batch)
            if remaining is None:
                self.reminders.stop(batch.batch_id)
                self.store.mark_forgotten(batch.batch_id, batch)
            self._record("forget", requester, batch, tokens=[mask(token)])
            return Forgotten(batch, token)
        assert batch_id is not None
        if self.store.get_batch(batch_id) is None:
            self._already_forgotten(requester, batch_id, batch_id=batch_id)
        batch = self._own_batch(requester, batch_id, is_admin, "forget")
        self.store.forget_batch(batch)
        self.store.mark_forgotten(batch.batch_id, batch)
        self.reminders.stop(batch.batch_id)
        self._record("forget", requester, batch, count=len(batch.tokens),
                     tokens=[mask(t) for t in batch.tokens])
        return Forgotten(batch)

    def _already_forgotten(self, requester: Requester, key: str, *, batch_id: str = "",
                           tokens: list[str] | None = None) -> None:
        """AlreadyForgotten (audited) if `key` was forgotten; otherwise nothing."""
        if self.store.is_forgotten(key):
            self._record("forget", requester, None, batch_id=batch_id, tokens=tokens,
                         outcome="already")
            raise AlreadyForgotten(key)

    def previewed(self, requester: Requester, token: str, status: str | None) -> None:
        """Audit a link preview shown to `requester` (what Exotel said, or "unknown")."""
        self._record("unfurl", requester, None, tokens=[mask(token)], detail=status or "unknown")

    def refused(self, requester: Requester, action: str, reason: str,
                outcome: str = "refused", batch_id: str = "") -> None:
        """Audit a refusal (access, quota, rate limit) under whoever was refused."""
        self.metrics.command(action, outcome)
        self._record(action, requester, None, outcome=outcome, detail=reason, batch_id=batch_id)

    def _own_batch(self, requester: Requester, batch_id: str, is_admin: bool,
                   action: str = "") -> Batch:
        """The batch, if `requester` may act on it (the access policy says); audited if not."""
        batch = self.store.get_batch(batch_id)
        if batch is None:
            if action:
                self._record(action, requester, None, batch_id=batch_id, outcome="gone")
            raise BatchGone(batch_id)
        if not (self.access.may_act_on(requester.user_id, batch).allowed or is_admin):
            if action:
                self.refused(requester, action, "not theirs", batch_id=batch_id)
            raise NotYours(batch_id)
        return batch

    def _record(self, action: str, requester: Requester, batch: Batch | None, *,
                batch_id: str = "", count: int | None = None, tokens: list[str] | None = None,
                outcome: str = "ok", detail: str = "") -> None:
        try:
            self.audit.record(action, team_id=requester.team_id, user_id=requester.user_id,
                              channel_id=requester.channel_id, outcome=outcome,
                              batch_id=batch.batch_id if batch else batch_id, count=count,
                              tokens=tokens or [], detail=detail)
        except StoreUnavailable:
            log.error("could not write the audit entry for %s by %s", action, requester.user_id)


def _check_outcome(error: ExotelError) -> str:
    """A failed check, in the audit's words: Exotel doesn't know the token, the budget was
    spent, or the call failed."""
    if isinstance(error, ExotelNotFound):
        return "unknown"
    if isinstance(error, ExotelRateLimited):
        return "rate-limited"
    return "failed"


def _fields(command: str, requester: Requester, outcome: str, exotel_seconds: float,
            batch: Batch | None) -> dict[str, object]:
    """What each use case logs, for one-line-per-event JSON logs (LOG_FORMAT=json)."""
    return {"command": command, "team_id": requester.team_id, "user_id": requester.user_id,
            "channel_id": requester.channel_id, "outcome": outcome,
            "exotel_seconds": exotel_seconds, "request_id": batch.batch_id if batch else None}
