"""The completion signal: live links' statuses polled in the background, within a share of
Exotel's budget; the requester gets one DM when a link turns USED.

A link whose 24 h just ended gets a last look (its keys outlive it by ENDED_KEPT): what
Exotel says of it (USED at the last minute, or EXPIRED), or, once CONCLUDE_AFTER has passed
without an answer, EXPIRED by the bot's own reckoning. Either way a link that ended unused
brings `link.expired` once.

It runs as a chain of RQ jobs on its own queue, which workers take last, one per
STATUS_POLL_SECONDS slot of the clock. A slot's job id is its number, so every worker that
starts (and every round that ends) schedules the same next job: duplicates collapse into one
chain, and a slot that still runs twice does its round once (a SET NX per slot).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rq import Queue, Retry

from bot.domain.models import Batch, TrackedLink
from bot.domain.status import DONE, StatusBook
from bot.domain.store import ENDED_KEPT, TokenStore, now
from bot.engine.registry import Job
from bot.exotel.client import ExotelClient, ExotelError, ExotelRateLimited
from bot.settings import LINK_TTL
from bot.slack import linkviews
from bot.slack.delivery import Delivery

log = logging.getLogger(__name__)

MAX_BATCHES = 1000  # live batches looked at per round, newest first
ROUND_SECONDS = 60  # a round stops asking Exotel after this, whatever budget is left
JOB_TIMEOUT = ROUND_SECONDS + 60
NEAR_REMINDER = timedelta(minutes=30)  # links this close to their reminder go first
# An ended link Exotel gave no answer for this long after its 24 h is taken as EXPIRED: half
# of ENDED_KEPT, so rounds that fail (Exotel down, no budget) still leave time to conclude.
CONCLUDE_AFTER = ENDED_KEPT / 2


@dataclass
class Round:
    checked: int = 0
    used: list[str] = field(default_factory=list)  # masked tokens that turned USED
    expired: list[str] = field(default_factory=list)  # masked tokens of links that ended
    out_of_budget: bool = False
    failed: int = 0  # checks Exotel did not answer

    def __str__(self) -> str:
        return (f"checked {self.checked}, used {','.join(self.used) or 'none'}"
                + (f", expired {','.join(self.expired)}" if self.expired else "")
                + (f", {self.failed} failed" if self.failed else "")
                + (", out of budget" if self.out_of_budget else ""))


@dataclass
class StatusPoller:
    store: TokenStore
    book: StatusBook
    exotel: ExotelClient  # its limiter is the PollBudget: no slot, no request
    delivery: Delivery
    queue: Queue  # STATUS_QUEUE: workers take it after commands and reminders

    def poll_once(self) -> Round:
        result = Round()
        started = time.monotonic()
        for batch, link in self._candidates():
            record = self.book.get(link.token)
            if record is not None and record.status in DONE:
                if record.status == "USED" and not record.notified:
                    self._tell(batch, link)  # a DM that failed last time
                continue
            if now() - link.expires_at >= CONCLUDE_AFTER:
                self.book.record(link, "EXPIRED", batch.customer_ref)  # no answer in time
                result.expired.append(_masked(link))
                continue
            if time.monotonic() - started > ROUND_SECONDS:
                break
            try:
                status = self.exotel.token_status(link.token)
            except ExotelRateLimited:
                result.out_of_budget = True
                break
            except ExotelError as error:
                log.debug("status poll of %s failed: %s", _masked(link), error)
                result.failed += 1
                continue
            result.checked += 1
            if status == "EXPIRED":
                result.expired.append(_masked(link))
            if self.book.record(link, status, batch.customer_ref):
                result.used.append(_masked(link))
                self._tell(batch, link)
        return result

    def _candidates(self) -> list[tuple[Batch, TrackedLink]]:
        """Links that just ended (their last look, oldest first); then live links, those near
        their reminder first, then the newest."""
        found = [(batch, link) for batch in self.store.ended_batches(MAX_BATCHES)
                 for link in self.store.links_of(batch, ended=True)
                 if link.expires_at <= now()]
        batches = self.store.all_live_batches(MAX_BATCHES)
        moment = now()

        def order(batch: Batch) -> tuple[bool, float]:
            due = batch.reminder_due
            near = due is not None and abs(due - moment) < NEAR_REMINDER
            return (not near, -batch.issued_at.timestamp())

        for batch in sorted(batches, key=order):
            found.extend((batch, link) for link in self.store.links_of(batch))
        return found

    def _tell(self, batch: Batch, link: TrackedLink) -> None:
        """One DM to the requester per link, even if rounds overlap or run twice."""
        if not self.store.first_time(f"used-dm:{link.token}", LINK_TTL):
            self.book.mark_notified(link)
            return
        try:
            links = self.store.links_of(batch)
            statuses = self.book.get_many([item.token for item in links])
            self.delivery.direct_message(link.requester.user_id,
                                         linkviews.link_used(batch, link, links, statuses))
        except Exception:
            # Not told: let the next round try again.
            self.store.forget_once(f"used-dm:{link.token}")
            log.warning("could not tell %s that %s was used", link.requester.user_id,
                        _masked(link), exc_info=True)
            return
        self.book.mark_notified(link)
        log.debug("told %s that %s was used", link.requester.user_id, _masked(link))


def _masked(link: TrackedLink) -> str:
    from bot.exotel.tokens import mask

    return mask(link.token)


# The RQ chain. Its job is named (the registry's), not imported: the job module sits above.

def slot_of(moment: float, interval: int) -> int:
    return math.floor(moment / interval)


def schedule_next(queue: Queue, interval: int) -> str:
    """The next slot's round (the same job id whoever asks); its id."""
    slot = slot_of(time.time(), interval) + 1
    job_id = f"status-poll-{slot}"
    queue.enqueue_at(datetime.fromtimestamp(slot * interval, UTC), Job.POLL_STATUSES.value, slot,
                     job_id=job_id, job_timeout=JOB_TIMEOUT, result_ttl=0,
                     failure_ttl=int(timedelta(days=1).total_seconds()),
                     ttl=max(interval * 3, 600), retry=Retry(max=1, interval=[5]),
                     description="status poll")
    return job_id


def start_polling(queue: Queue, interval: int) -> None:
    """Called by every worker at start: begins the chain, or joins the one running."""
    try:
        schedule_next(queue, interval)
    except Exception:
        log.warning("could not schedule the status poll", exc_info=True)

