"""Expiry reminders: one per batch, scheduled in Redis with RQ, posted once.

RQ gives durability (a reminder due while every process was down runs when one is back),
one scheduler across replicas (its lock) and retries. Delivery is at least once, so the
job claims the reminder in Redis before posting and records it as sent afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import messages
from bot.exotel import ExotelClient
from bot.metrics import Metrics
from bot.models import Batch, Requester
from bot.store import TokenStore, now, redis_errors
from bot.tokens import mask

log = logging.getLogger(__name__)

QUEUE_NAME = "onboard-reminders"
SENT_KEY = "onboard:reminder:sent:{}"
CLAIM_KEY = "onboard:reminder:claim:{}"
STOPPED_KEY = "onboard:reminder:stopped:{}"
KEEP = timedelta(days=2)  # longer than any batch lives
# Longer than one send can take (Exotel deadline plus Slack), shorter than the first retry:
# a claim left by a killed worker has lapsed when RQ retries the job.
CLAIM_SECONDS = 45
JOB_TIMEOUT = 40
RETRY = Retry(max=5, interval=[60, 120, 300, 600, 1200])
LATE = timedelta(minutes=1)  # a reminder posted later than this counts as late in /metrics
# Slack errors that mean "this channel won't take it": the requester gets a DM instead.
DM_INSTEAD = {"not_in_channel", "channel_not_found", "is_archived", "restricted_action"}


class ReminderBusy(Exception):
    """Another worker is sending this reminder right now; RQ retries the job later."""


def job_id(batch_id: str) -> str:
    return f"reminder-{batch_id}"


def enqueue_at(queue: Queue, due: datetime, job_id: str, description: str,
               job: Callable[..., Any], *args: Any) -> None:
    """`job(*args)` at `due`, with the retries, timeout and TTLs every reminder job has."""
    queue.enqueue_at(due, job, *args, job_id=job_id, retry=RETRY, job_timeout=JOB_TIMEOUT,
                     result_ttl=int(KEEP.total_seconds()),
                     failure_ttl=int(KEEP.total_seconds()), description=description)


class Reminders:
    """Scheduling and the once-only bookkeeping of reminders."""

    def __init__(self, client: Redis, queue: Queue, lead: timedelta) -> None:
        self.redis = client
        self.queue = queue
        self.lead = lead

    def schedule(self, batch: Batch) -> datetime:
        due = batch.reminder_due or batch.expires_at - self.lead
        enqueue_at(self.queue, due, job_id(batch.batch_id), f"reminder for batch {batch.batch_id}",
                   send_reminder, batch.batch_id, due.isoformat())
        return due

    def stop(self, batch_id: str) -> None:
        """No reminder for this batch from now on, even one already queued."""
        with redis_errors(), suppress(NoSuchJobError):
            self.redis.set(STOPPED_KEY.format(batch_id), "1", ex=KEEP)
            Job.fetch(job_id(batch_id), connection=self.queue.connection).cancel()

    def is_stopped(self, batch_id: str) -> bool:
        return bool(self.redis.exists(STOPPED_KEY.format(batch_id)))

    def claim(self, batch_id: str) -> bool:
        """True if this worker may send; False if it was sent. ReminderBusy if in flight."""
        if self.redis.exists(SENT_KEY.format(batch_id)):
            return False
        if not self.redis.set(CLAIM_KEY.format(batch_id), "1", nx=True, ex=CLAIM_SECONDS):
            raise ReminderBusy(batch_id)
        return True

    def mark_sent(self, batch_id: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.set(SENT_KEY.format(batch_id), now().isoformat(), ex=KEEP)
            pipe.delete(CLAIM_KEY.format(batch_id))
            pipe.execute()

    def release(self, batch_id: str) -> None:
        self.redis.delete(CLAIM_KEY.format(batch_id))


@dataclass
class ReminderSender:
    """What the reminder job does when it fires."""

    reminders: Reminders
    store: TokenStore
    exotel: ExotelClient
    slack: WebClient
    metrics: Metrics

    def send(self, batch_id: str, due: datetime) -> str:
        if self.reminders.is_stopped(batch_id):
            return "stopped by a user"
        batch = self.store.get_batch(batch_id)
        if batch is None:
            return "batch no longer tracked"
        if not self.reminders.claim(batch_id):
            return "already sent"
        late_by = now() - due
        try:
            outcome = self._send(batch, late_by)
        except BaseException:
            self.reminders.release(batch_id)
            self.metrics.count("onboard_reminders", outcome="failed")
            raise
        self.reminders.mark_sent(batch_id)
        posted = outcome.startswith("posted")
        self.metrics.count("onboard_reminders", outcome="sent" if posted else "skipped")
        if posted and late_by > LATE:
            self.metrics.count("onboard_reminders", outcome="late")
        log.info("reminder batch=%s: %s", batch_id, outcome)
        return outcome

    def _send(self, batch: Batch, late_by: timedelta) -> str:
        statuses = self.exotel.token_statuses(batch.tokens)
        known = {token: s for token, s in statuses.items() if isinstance(s, str)}
        if len(known) == len(statuses) and "VALID" not in known.values():
            summary = ",".join(f"{mask(t)}={s}" for t, s in known.items())
            return f"not posted: no link is still valid ({summary})"
        message = messages.reminder(batch, known, late_by)
        return f"posted to {self._post(batch.requester, message)}"

    def _post(self, requester: Requester, message: messages.Message) -> str:
        try:
            self.slack.chat_postMessage(channel=requester.channel_id, **message)
            return requester.channel_id
        except SlackApiError as error:
            if error.response.get("error") not in DM_INSTEAD:
                raise
            log.info("channel %s refused the reminder (%s); sending it as a DM",
                     requester.channel_id, error.response.get("error"))
        dm = self.slack.conversations_open(users=requester.user_id)["channel"]["id"]
        self.slack.chat_postMessage(channel=dm, **message)
        return f"a DM to {requester.user_id}"


def send_reminder(batch_id: str, due: str) -> str:
    """The RQ job: post the reminder for one batch (run by `python -m bot worker`)."""
    from bot.jobs import current_core

    return current_core().reminder_sender.send(batch_id, datetime.fromisoformat(due))
