"""Posting a reminder when its job fires: Exotel's word on each link, the message, the
post (or a DM), and the once-only bookkeeping of `bot.domain.reminders` around it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError

from bot.domain.models import Batch, Requester
from bot.domain.reminders import (
    CLOCK_SKEW,
    DM_INSTEAD,
    EVENT_TYPE,
    HISTORY_PAGES,
    LATE,
    MAX_RESCHEDULES,
    Claim,
    Reminders,
    SlackRateLimited,
)
from bot.domain.status import StatusBook
from bot.domain.store import TokenStore, now
from bot.exotel.client import ExotelClient
from bot.exotel.tokens import mask
from bot.slack import messages
from bot.slack.blocks import Message
from bot.slack.delivery import Delivery
from bot.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class ReminderSender:
    """What the reminder job does when it fires."""

    reminders: Reminders
    store: TokenStore
    exotel: ExotelClient
    # Its Slack client waits out no rate limit: a 429 puts the job back, see send(). Posts
    # and DMs go through it, and so does reading a channel's history.
    delivery: Delivery
    metrics: Metrics
    statuses: StatusBook

    def send(self, batch_id: str, due: datetime, attempt: int = 0) -> str:
        if self.reminders.is_stopped(batch_id):
            return "stopped by a user"
        batch = self.store.get_batch(batch_id)
        if batch is None:
            return "batch no longer tracked"
        claim = self.reminders.claim(batch)
        if claim is None:
            return "already sent"
        try:
            outcome = self._recover(batch, claim) or self._send(batch, claim, now() - due)
        except SlackRateLimited as limited:
            self.reminders.give_up(batch, claim)
            return self._later(batch_id, due, attempt, limited.retry_after)
        except BaseException:
            self.reminders.give_up(batch, claim)
            self.metrics.reminder("failed")
            raise
        self.reminders.mark_sent(batch)
        posted = outcome.startswith(("posted", "already posted"))
        self.metrics.reminder("sent" if posted else "skipped")
        if posted and now() - due > LATE:
            self.metrics.reminder("late")
        return outcome  # the job's line says it

    def _later(self, batch_id: str, due: datetime, attempt: int, retry_after: int) -> str:
        """Slack said 429: this worker goes on to other reminders; this one comes back."""
        if attempt >= MAX_RESCHEDULES:
            raise SlackRateLimited(retry_after)  # RQ's own retries, then failed
        self.reminders.reschedule(batch_id, due, attempt + 1, timedelta(seconds=retry_after))
        self.metrics.reminder("rate_limited")
        return f"rate limited: again in {retry_after} s"

    def _recover(self, batch: Batch, claim: Claim) -> str | None:
        """After an attempt that did not finish: its post, if it reached Slack."""
        if not claim.taken_over or not claim.where:
            return None
        oldest = f"{(claim.at - CLOCK_SKEW).timestamp():.6f}"
        for channel in claim.where:
            try:
                if self._posted_in(channel, batch.batch_id, oldest):
                    return f"already posted to {channel} (found in its history)"
            except SlackApiError as error:
                if error.response.status_code == 429:
                    # Not worth waiting for: at least once beats never.
                    log.warning("reminder batch=%s: rate limited reading %s", batch.batch_id,
                                channel)
                    continue
                log.warning("reminder batch=%s: cannot read %s to see whether the last "
                            "attempt posted (%s); posting (maybe again)", batch.batch_id,
                            channel, error.response.get("error"))
            except (SlackClientError, OSError) as error:
                log.warning("reminder batch=%s: cannot read %s (%s); posting (maybe again)",
                            batch.batch_id, channel, type(error).__name__)
        return None

    def _posted_in(self, channel: str, batch_id: str, oldest: str) -> bool:
        cursor = None
        for _ in range(HISTORY_PAGES):
            page = self.delivery.slack.conversations_history(
                channel=channel, oldest=oldest, include_all_metadata=True, limit=200,
                cursor=cursor)
            for message in page.get("messages") or []:
                metadata = message.get("metadata") or {}
                if (metadata.get("event_type") == EVENT_TYPE
                        and (metadata.get("event_payload") or {}).get("batch_id") == batch_id):
                    return True
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return False
        return False

    def _send(self, batch: Batch, claim: Claim, late_by: timedelta) -> str:
        # A link known USED is asked about no more; the others' answers are kept.
        used = {t for t, r in self.statuses.get_many(batch.tokens).items() if r.status == "USED"}
        statuses: dict[str, Any] = {t: "USED" for t in used}
        statuses.update(self.exotel.token_statuses([t for t in batch.tokens if t not in used]))
        links = {link.token: link for link in self.store.links_of(batch)}
        for token, status in statuses.items():
            if isinstance(status, str) and token in links and token not in used:
                self.statuses.record(links[token], status)
        known = {token: s for token, s in statuses.items() if isinstance(s, str)}
        if len(known) == len(statuses) and "VALID" not in known.values():
            summary = ",".join(f"{mask(t)}={s}" for t, s in known.items())
            return f"not posted: no link is still valid ({summary})"
        message = messages.reminder(batch, known, late_by)
        return f"posted to {self._post(batch, claim, message)}"

    def _post(self, batch: Batch, claim: Claim, message: Message) -> str:
        requester: Requester = batch.requester
        metadata = {"event_type": EVENT_TYPE, "event_payload": {"batch_id": batch.batch_id}}
        try:
            self._post_to(batch, claim, requester.channel_id, message, metadata)
            return requester.channel_id
        except SlackApiError as error:
            if error.response.get("error") not in DM_INSTEAD:
                raise
            log.debug("channel %s refused the reminder (%s); sending it as a DM",
                      requester.channel_id, error.response.get("error"))
        dm = self._call(self.delivery.open_dm, user=requester.user_id)
        self._post_to(batch, claim, dm, message, metadata)
        return f"a DM to {requester.user_id}"

    def _post_to(self, batch: Batch, claim: Claim, channel: str, message: Message,
                 metadata: dict[str, Any]) -> None:
        self.reminders.posting_to(batch, claim, channel)
        self._call(self.delivery.post, channel=channel, message=message, metadata=metadata)

    @staticmethod
    def _call(method: Callable[..., Any], **kwargs: Any) -> Any:
        """A Web API call; Slack's 429 becomes SlackRateLimited with its Retry-After."""
        try:
            return method(**kwargs)
        except SlackApiError as error:
            if error.response.status_code != 429:
                raise
            raise SlackRateLimited(_retry_after(error.response.headers)) from None


def _retry_after(headers: Any) -> int:
    for name, value in dict(headers or {}).items():
        if name.lower() == "retry-after":
            with suppress(TypeError, ValueError):
                return max(1, int(value[0] if isinstance(value, list) else value))
    return 60  # Slack always sends it; a minute if a proxy dropped it
