"""The core the listeners and jobs call: Exotel, the store, reminders and the use cases.

`bot.runtime.composition` builds it; this module only says what it holds."""

from __future__ import annotations

from dataclasses import dataclass

from rq import Queue
from slack_sdk import WebClient

from bot.domain.access import AccessPolicy
from bot.domain.digest import Digests
from bot.domain.events import NO_EVENTS, LinkEvents
from bot.domain.history import History
from bot.domain.onboarding import BatchGone, BudgetWait, NotYours, Onboarding
from bot.domain.previews import LinkPreviews
from bot.domain.ratelimit import QuotaExceeded, UserRateLimit
from bot.domain.reminders import ReminderBusy, Reminders
from bot.domain.status import StatusBook
from bot.domain.store import StoreUnavailable, TokenStore
from bot.domain.webhooks import Webhooks
from bot.engine.queue import CommandQueue
from bot.exotel.client import ExotelError
from bot.settings import Settings
from bot.slack.delivery import Delivery
from bot.slack.groups import GroupCache
from bot.slack.home import HomeTabs
from bot.slack.poller import StatusPoller
from bot.slack.reminder_sender import ReminderSender
from bot.telemetry.metrics import Metrics

# Failures that are news for the user, not bugs: logged without a traceback.
EXPECTED_FAILURES = (ExotelError, StoreUnavailable, BatchGone, NotYours, BudgetWait,
                     QuotaExceeded, ReminderBusy)

@dataclass
class Core:
    settings: Settings
    store: TokenStore
    onboarding: Onboarding
    reminders: Reminders
    reminder_sender: ReminderSender
    slack: WebClient  # for look-ups (users.info); everything sent goes through `delivery`
    delivery: Delivery
    access: AccessPolicy
    groups: GroupCache  # the membership the access policy reads, kept warm by the worker
    metrics: Metrics
    home: HomeTabs
    commands: CommandQueue
    check_rate: UserRateLimit  # /check-token commands per user a minute
    statuses: StatusBook
    poller: StatusPoller
    history: History  # each link's record for reports, kept AUDIT_RETENTION_DAYS
    previews: LinkPreviews  # of onboarding links pasted in Slack (unfurls)
    webhooks: Webhooks | None = None  # None while WEBHOOK_URLS is unset
    digests: Digests | None = None  # None while DIGEST_CHANNEL is unset
    events: LinkEvents = NO_EVENTS

    @property
    def queues(self) -> list[Queue]:
        """The job queues, in the order workers take from them (webhook deliveries last,
        and only while WEBHOOK_URLS is set)."""
        queues = [self.commands.queue, self.reminders.queue, self.poller.queue]
        return queues + ([self.webhooks.queue] if self.webhooks else [])


