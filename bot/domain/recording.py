"""Recording the links Exotel makes while Redis does not answer: tried again, for a while.

Exotel charges for a link the moment it answers, so a link it made is never withheld. Its
recording (batch, quota, status) is tried again while Redis gives no answer, up to a bound
past the command's Exotel deadline; a link still unrecorded then is shown all the same, as
an `UntrackedLink`, with the operator's command that tracks it later (`python -m bot track`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential

from bot.domain.models import Requester
from bot.domain.store import not_answering
from bot.settings import LINK_TTL

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long past Exotel's deadline a link is still tried into Redis: an append-only Redis
# restarting takes seconds (measured: stopped 3 s twice under load). The issuing job's
# timeout (bot.engine.queue) leaves room for it.
RECORD_MARGIN = 10.0


@dataclass(frozen=True)
class RecordRetry:
    """How long and how often recording is tried again while Redis gives no answer. The
    clock and sleep are a test's to replace, so that no test waits."""

    within: float  # seconds from the start of the command's Exotel calls
    first_pause: float = 0.2
    longest_pause: float = 2.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def past(cls, exotel_deadline: float) -> RecordRetry:
        """Until RECORD_MARGIN after the command's Exotel deadline."""
        return cls(within=exotel_deadline + RECORD_MARGIN)

    def deadline(self) -> float:
        """The bound for a command whose Exotel calls start now."""
        return self.clock() + self.within

    def keep_trying(self, step: Callable[[], T], deadline: float, what: str) -> T:
        """`step()`, again after a growing pause while Redis gives no answer, until it works
        or `deadline` has passed (then its error stands). Any other error stands at once, so
        `step` must be safe to repeat after a write whose answer was lost."""
        growing = wait_exponential(multiplier=self.first_pause, max=self.longest_pause)

        def pause(state: RetryCallState) -> float:  # one last try at the bound itself
            return min(growing(state), max(0.0, deadline - self.clock()))

        def said(state: RetryCallState) -> None:  # once per step: the outage, not each try
            if state.attempt_number == 1:
                log.warning("Redis did not answer recording %s; trying again for up to "
                            "%.0f s", what, deadline - self.clock())

        started = self.clock()
        retrying = Retrying(retry=retry_if_exception(not_answering), wait=pause,
                            stop=lambda _: self.clock() >= deadline, sleep=self.sleep,
                            before_sleep=said, reraise=True)
        done = retrying(step)
        if retrying.statistics.get("attempt_number", 1) > 1:
            log.info("recorded %s after %.1f s without Redis", what, self.clock() - started)
        return done


@dataclass(frozen=True)
class UntrackedLink:
    """A link Exotel made (and charged for) that Redis would not take in time: the bot will
    not remind of it, list it or report its use, but shows it all the same."""

    url: str
    token: str
    requester: Requester
    note: str
    batch_id: str  # the command's batch, which holds it not
    issued_at: datetime  # the command's: no later than Exotel made it

    @property
    def expires_at(self) -> datetime:
        return self.issued_at + LINK_TTL
