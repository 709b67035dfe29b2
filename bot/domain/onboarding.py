"""The bot's use cases: issue, check, renew, share, list and forget links. No Slack here."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bot.domain.events import NO_EVENTS, LinkEvents
from bot.domain.models import Batch, Listing, Requester, TrackedLink
from bot.domain.ratelimit import QuotaExceeded
from bot.domain.recording import RecordRetry, UntrackedLink
from bot.domain.store import (
    STORE_FAILURES,
    BatchRecorder,
    Scope,
    StoreUnavailable,
    not_answering,
    now,
    redis_errors,
)
from bot.exotel.client import (
    ExotelError,
    ExotelNotFound,
    ExotelRateLimited,
    OnboardingLink,
)
from bot.exotel.tokens import mask
from bot.settings import LINK_TTL

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
# A tracked link's reminder already due goes out this soon: after its batch is written.
SOONEST_REMINDER = timedelta(seconds=30)
CLOCK_SKEW = timedelta(minutes=1)  # between the clock that noted an issue time and this one


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


class AlreadyTracked(Exception):
    """`track` was given a link the bot tracks already."""

    def __init__(self, link: TrackedLink) -> None:
        super().__init__(f"{mask(link.token)} is tracked already")
        self.link = link


class NotTrackable(Exception):
    """`track` was given a link it cannot track; the message says why."""


class Interrupted(ExotelError):
    """Why a link was not made: the worker making it stopped (killed) half-way."""

    def __init__(self) -> None:
        super().__init__("The bot was interrupted before it could make this link; nothing "
                         "was charged for it. Please issue it again.")


@dataclass
class IssueResult:
    requested: int
    note: str
    customer_ref: str = ""
    batch: Batch | None = None
    links: list[TrackedLink] = field(default_factory=list)
    errors: list[ExotelError] = field(default_factory=list)
    # Made by Exotel, but Redis would not take them in time: shown all the same.
    untracked: list[UntrackedLink] = field(default_factory=list)
    no_reminder: bool = False  # the batch's reminder could not be scheduled

    @property
    def reminder_due(self) -> datetime | None:
        return self.batch.reminder_due if self.batch and not self.no_reminder else None

    @property
    def made(self) -> int:
        return len(self.links) + len(self.untracked)

    @property
    def failed(self) -> int:
        return self.requested - self.made

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
                 statuses: Statuses, access: AccessPolicy, recording: RecordRetry,
                 events: LinkEvents = NO_EVENTS) -> None:
        self.exotel = exotel
        self.events = events  # link events for webhooks
        self.recording = recording  # how long a link Exotel made is tried into Redis
        self.statuses = statuses
        self.access = access  # who may act on a batch
        self.budget = budget
        self.store = store
        self.reminders = reminders
        self.audit = audit
        self.quota = quota
        self.metrics = metrics

    def issue(self, requester: Requester, count: int, note: str, action: str = "issue",
              batch_id: str | None = None, customer_ref: str = "") -> IssueResult:
        """Create `count` links and track every one the moment Exotel returns it, in a batch
        that holds the customer's note and CRM reference (`customer_ref`, checked already).

        Redis is asked first (for the quota, so it is known to answer) so that no Exotel
        link is made that could not be tracked. `batch_id` names the batch before any link
        exists, so that whoever finds a command cut short can account for what it made.
        A link Redis will not take even after `recording`'s bound is in `untracked`.
        """
        with redis_errors():
            try:
                self.quota.check(requester.team_id, requester.user_id, count)
            except QuotaExceeded as refused:
                self._record(action, requester, None, count=count, outcome="quota",
                             detail=str(refused), customer_ref=customer_ref)
                raise
            wait = self.budget.wait_for(count)
        if wait > BUDGET_NAP:
            with redis_errors():  # the window it waits for is all issuing's: no polls take any
                self.budget.issuing_waits(wait + BUDGET_NAP)
            raise BudgetWait(wait, count)
        time.sleep(wait)
        recorder = BatchRecorder.start(self.store, requester, note,
                                       batch_id or uuid.uuid4().hex, self.reminders.lead,
                                       customer_ref)
        deadline = self.recording.deadline()  # Exotel's own deadline starts now too
        why: dict[str, str] = {}  # token: why Redis did not take it

        def record(link: OnboardingLink) -> None:
            """Never raises for Redis: past the bound the link is shown untracked."""
            try:
                self.recording.keep_trying(lambda: self._record_link(recorder, link),
                                           deadline, f"link {mask(link.token)}")
            except STORE_FAILURES as failure:
                why[link.token] = (f"Redis did not answer for {self.recording.within:.0f} s"
                                   if not_answering(failure) else "Redis refused it")

        started = time.monotonic()
        outcome = self.exotel.create_links(count, on_link=record)
        exotel_seconds = round(time.monotonic() - started, 3)
        result = IssueResult(requested=count, note=note, customer_ref=customer_ref,
                             errors=outcome.errors,
                             untracked=self._untracked(outcome.links, recorder, why))
        if recorder.links:
            result.batch, result.links = recorder.batch, list(recorder.links)
            self._remind(result, deadline)
            self.events.issued(result.batch, result.links)
        self._issued(action, requester, result, exotel_seconds)
        return result

    def _record_link(self, recorder: BatchRecorder, link: OnboardingLink) -> None:
        """Batch, quota and status for one link; each step safe to repeat (a retry after an
        answer Redis lost adds no second token and charges no second time)."""
        tracked = recorder.add(link)
        batch = recorder.batch
        with redis_errors():
            self.quota.charge(batch.requester.team_id, batch.requester.user_id, link.token)
        self.statuses.issued(tracked, batch.customer_ref)  # VALID: Exotel just returned it

    def _untracked(self, made: list[OnboardingLink], recorder: BatchRecorder,
                   why: dict[str, str]) -> list[UntrackedLink]:
        """The links Exotel made that the batch does not hold, each logged for the operator."""
        recorded = {link.token for link in recorder.links}
        batch = recorder.batch
        untracked = [UntrackedLink(url=link.url, token=link.token, requester=batch.requester,
                                   note=batch.note, batch_id=batch.batch_id,
                                   issued_at=batch.issued_at)
                     for link in made if link.token not in recorded]
        for link in untracked:
            log.error("link %s of %s (batch %s, note of %d characters) is NOT tracked: %s; "
                      "the requester is shown the link, and the `python -m bot track` command "
                      "that tracks it", mask(link.token), batch.requester.user_id,
                      batch.batch_id, len(batch.note),
                      why.get(link.token, "recording it failed (logged above)"))
        return untracked

    def _remind(self, result: IssueResult, deadline: float) -> None:
        """The batch's reminder and note index, tried again like its links; past the bound
        its links stay tracked (listed, polled) without a reminder."""
        batch = result.batch
        assert batch is not None
        try:
            self.recording.keep_trying(lambda: self.reminders.schedule(batch), deadline,
                                       f"the reminder of batch {batch.batch_id}")
        except STORE_FAILURES:
            result.no_reminder = True
            log.error("batch %s of %s has no reminder: Redis did not take it",
                      batch.batch_id, batch.requester.user_id)
        if not batch.note.strip():
            return
        try:
            self.recording.keep_trying(lambda: self.store.note_index_set(batch), deadline,
                                       f"the note index of batch {batch.batch_id}")
        except STORE_FAILURES:  # only the repeat-customer answer misses it
            log.warning("batch %s is not findable by its customer note: Redis did not take "
                        "it", batch.batch_id)

    def existing(self, requester: Requester, count: int, note: str, customer_ref: str = ""
                 ) -> tuple[Batch, list[tuple[TrackedLink, LinkStatus | None]]] | None:
        """The requester's live links for this customer, if `count` of them are still
        unused: issuing again would only spend Exotel's budget. Never calls Exotel.

        The customer is the note; a CRM reference, when one is given, must be the batch's
        too (compared ignoring case): the same note for another CRM record is another
        customer, and links for a reference the batch lacks would not carry it."""
        if not note.strip():
            return None
        batch_id = self.store.note_index_get(requester, note)
        batch = self.store.get_batch(batch_id) if batch_id else None
        if batch is None:
            return None
        if customer_ref and customer_ref.casefold() != batch.customer_ref.casefold():
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
                             customer_ref=batch.customer_ref if batch else "",
                             errors=[Interrupted() for _ in range(missing)])
        if batch and links:
            result.batch = batch
            self.reminders.schedule(batch)  # the same job id: at most one reminder
            # Cut short before its events: the same ids if some went, receivers dedupe.
            self.events.issued(batch, links)
        self._issued("issue_interrupted", requester, result, 0.0)
        return result

    def _issued(self, action: str, requester: Requester, result: IssueResult,
                exotel_seconds: float) -> None:
        self.metrics.links_issued(result.made)
        masked = [mask(link.token) for link in result.links]
        untracked = [mask(link.token) for link in result.untracked]
        status = "ok" if not result.errors else f"{result.failed} failed"
        log.debug("%s: %d of %d links, tokens %s, untracked %s, failures %s", action,
                  result.made, result.requested, ",".join(masked), ",".join(untracked) or "none",
                  result.reasons(),
                  extra=_fields(action, requester, status, exotel_seconds, result.batch))
        # The untracked ones too, if Redis takes this: else their log lines are the record.
        self._record(action, requester, result.batch, count=result.made,
                     tokens=masked + untracked, outcome=status,
                     batch_id=result.untracked[0].batch_id if result.untracked else "",
                     detail=f"not tracked: {','.join(untracked)}" if untracked else "",
                     customer_ref=result.customer_ref)

    def track(self, requester: Requester, link: OnboardingLink, note: str,
              issued_at: datetime) -> Batch:
        """Track `link` as a one-link batch of `requester`'s issued at `issued_at`, as if
        issued then: status VALID, listed, polled, reminded for the rest of its 24 hours.

        For a link shown untracked (Redis down), or any link of the account. Exotel is not
        asked, and no quota is charged: Exotel charged when it made the link, and the quota
        limits what users ask Exotel for. AlreadyTracked if the bot tracks it; NotTrackable
        if its 24 hours are over (or not begun). The batch is written last, so a run cut
        short by Redis can simply be run again."""
        expires_at = issued_at + LINK_TTL
        if expires_at <= now():
            raise NotTrackable(f"its 24 hours ended {expires_at.astimezone(UTC):%Y-%m-%d %H:%M} "
                               "UTC")
        if issued_at > now() + CLOCK_SKEW:
            raise NotTrackable("its issue time is in the future")
        self._not_tracked_yet(requester, link.token)
        due = max(expires_at - self.reminders.lead, now() + SOONEST_REMINDER)
        recorder = BatchRecorder(self.store, Batch(
            batch_id=uuid.uuid4().hex, requester=requester, note=note, tokens=[],
            issued_at=issued_at, expires_at=expires_at, reminder_due=min(due, expires_at)))
        with redis_errors():  # RQ's scheduling is not wrapped by the reminders
            self.statuses.issued(recorder.link_of(link))
            self.reminders.schedule(recorder.batch)
            if note.strip():
                self.store.note_index_set(recorder.batch)
            recorder.add(link)
        batch = recorder.batch
        self.events.issued(batch, [recorder.link_of(link)])
        log.info("track: %s for %s as batch %s, expires %s", mask(link.token),
                 requester.user_id, batch.batch_id, batch.expires_at.isoformat(),
                 extra=_fields("track", requester, "ok", 0.0, batch))
        self._record("track", requester, batch, count=1, tokens=[mask(link.token)],
                     detail=f"issued {issued_at.isoformat()}")
        return batch

    def _not_tracked_yet(self, requester: Requester, token: str) -> None:
        """AlreadyTracked (audited) if a live batch holds `token`."""
        known = self.store.get_link(token)
        batch = self.store.get_batch(known.batch_id) if known else None
        if known is not None and batch is not None and token in batch.tokens:
            self._record("track", requester, batch, tokens=[mask(token)], outcome="already")
            raise AlreadyTracked(known)

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
                          batch_id=new_batch_id, customer_ref=batch.customer_ref)

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
            self._forgotten(batch, [link])
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
        self._forgotten(batch, self.store.links_of(batch))
        self.store.forget_batch(batch)
        self.store.mark_forgotten(batch.batch_id, batch)
        self.reminders.stop(batch.batch_id)
        self._record("forget", requester, batch, count=len(batch.tokens),
                     tokens=[mask(t) for t in batch.tokens])
        return Forgotten(batch)

    def _forgotten(self, batch: Batch, links: list[TrackedLink]) -> None:
        """link.forgotten for each link, with its last known status."""
        if not self.events.enabled or not links:
            return
        records = self.statuses.get_many([link.token for link in links])
        for link in links:
            record = records.get(link.token)
            self.events.forgotten(batch, [link], record.status if record else "VALID")

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
                outcome: str = "ok", detail: str = "", customer_ref: str | None = None) -> None:
        """One audit entry; its CRM reference is `customer_ref`, else the batch's."""
        if customer_ref is None:
            customer_ref = batch.customer_ref if batch else ""
        try:
            self.audit.record(action, team_id=requester.team_id, user_id=requester.user_id,
                              channel_id=requester.channel_id, outcome=outcome,
                              batch_id=batch.batch_id if batch else batch_id, count=count,
                              tokens=tokens or [], detail=detail, customer_ref=customer_ref)
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
