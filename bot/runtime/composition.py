"""The composition root: settings in, the core every listener and job uses out.

The one place that builds the bot's clients (Slack, Exotel, Redis, RQ queues) and wires the
use cases, the Slack layer and the job engine together."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from redis import Redis
from rq import Queue
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.domain.access import AccessPolicy
from bot.domain.audit import Audit
from bot.domain.digest import Digests
from bot.domain.events import LinkEvents
from bot.domain.history import History
from bot.domain.onboarding import Onboarding
from bot.domain.previews import LinkPreviews
from bot.domain.ratelimit import LinkQuota, PollBudget, SharedRateLimiter, UserRateLimit
from bot.domain.recording import RecordRetry
from bot.domain.reminders import Reminders
from bot.domain.status import StatusBook
from bot.domain.store import TokenStore, connect_for
from bot.domain.webhooks import Webhooks
from bot.engine.queue import CommandQueue, Reply
from bot.engine.registry import (
    COMMANDS_QUEUE,
    REMINDERS_QUEUE,
    STATUS_QUEUE,
    WEBHOOKS_QUEUE,
    Job,
)
from bot.exotel.client import ExotelClient, Limiter
from bot.settings import Settings
from bot.slack.core import Core
from bot.slack.delivery import Delivery
from bot.slack.groups import GroupCache
from bot.slack.home import HomeTabs
from bot.slack.poller import StatusPoller
from bot.slack.reminder_sender import ReminderSender
from bot.telemetry.metrics import Metrics

SLACK_RATE_LIMIT_RETRIES = 10  # Slack's 429s are waited out (Retry-After), not dropped


def slack_client(settings: Settings) -> WebClient:
    """The Web API client for everything the bot posts; waits out Slack's rate limits."""
    return WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        retry_handlers=[
            ConnectionErrorRetryHandler(),
            RateLimitErrorRetryHandler(max_retry_count=SLACK_RATE_LIMIT_RETRIES),
        ],
    )


def reminder_slack_client(settings: Settings) -> WebClient:
    """For reminder jobs: no waiting out 429s, which would hold the worker from other
    reminders; the job puts itself back for after Slack's Retry-After instead."""
    return WebClient(token=settings.slack_bot_token.get_secret_value(),
                     base_url=settings.slack_api_url,
                     retry_handlers=[ConnectionErrorRetryHandler()])


def exotel_client(settings: Settings, limiter: Limiter,
                  observe: Callable[[str, str, float], None] | None = None,
                  status_limiter: Limiter | None = None) -> ExotelClient:
    return ExotelClient(
        base_url=settings.exotel_url,
        account_sid=settings.exotel_account_sid,
        api_key=settings.exotel_api_key,
        api_token=settings.exotel_api_token.get_secret_value(),
        limiter=limiter,
        timeout=settings.exotel_timeout,
        deadline=settings.exotel_deadline,
        observe=observe,
        status_limiter=status_limiter,
    )


def build_core(settings: Settings) -> Core:
    if settings.redis_url is None:
        raise ValueError("REDIS_URL must be resolved before building the core")
    client = connect_for(settings)
    store = TokenStore(client)
    metrics = Metrics()
    limiter = SharedRateLimiter(
        client, settings.exotel_rate_per_minute, key=f"exotel:{settings.exotel_account_sid}",
        reserve=settings.issue_reserve_slots,
    )
    exotel = exotel_client(settings, limiter, observe=metrics.exotel_call,
                           status_limiter=limiter.non_issuing())
    # RQ stores pickled jobs: its connection must not decode replies. Listeners enqueue on
    # it before they ack, so it gives up well inside Slack's 3 s.
    jobs = connect_for(settings, decode_responses=False, health_check_interval=0)
    reminders = Reminders(client, Queue(REMINDERS_QUEUE, connection=jobs), settings.reminder_lead,
                          Job.SEND_REMINDER)
    slack = slack_client(settings)
    audit = Audit(client, timedelta(days=settings.audit_retention_days))
    quota = LinkQuota(client, settings.max_links_per_user_per_day)
    commands = CommandQueue(Queue(COMMANDS_QUEUE, connection=jobs), settings.exotel_deadline)
    groups = GroupCache(client, lambda timeout: lookup_client(settings, timeout),
                        refresh=lambda group_id: _refresh_group(commands, group_id))
    access = AccessPolicy(settings, groups)
    def sandbox() -> bool:  # known from the settings, or learnt from Exotel's answers
        return exotel.sandbox or poll_exotel.sandbox

    webhooks = build_webhooks(settings, client, jobs)
    events = LinkEvents(webhooks, store, sandbox)
    history = History(client, timedelta(days=settings.audit_retention_days))
    statuses = StatusBook(client, events, history)
    onboarding = Onboarding(exotel, store, reminders, audit, quota, metrics, limiter, statuses,
                            access=access, recording=RecordRetry.past(settings.exotel_deadline),
                            events=events)
    poll_exotel = exotel_client(settings, poll_budget(settings, client, limiter),
                                observe=metrics.exotel_call)

    delivery = Delivery(slack, sandbox, lookups=lookup_client(settings))
    return Core(
        settings=settings, store=store, onboarding=onboarding, reminders=reminders,
        reminder_sender=ReminderSender(
            reminders=reminders, store=store, exotel=exotel, statuses=statuses, metrics=metrics,
            delivery=Delivery(reminder_slack_client(settings), sandbox)),
        slack=slack, delivery=delivery, access=access, groups=groups, metrics=metrics,
        home=HomeTabs(onboarding, delivery, access.is_admin),
        commands=commands,
        check_rate=UserRateLimit(client, settings.check_token_per_minute, "check-token"),
        statuses=statuses,
        poller=StatusPoller(store, statuses, poll_exotel, delivery,
                            Queue(STATUS_QUEUE, connection=jobs)),
        previews=LinkPreviews(client, exotel, store, limiter,
                              f"exotel:{settings.exotel_account_sid}"),
        webhooks=webhooks, events=events, history=history,
        digests=build_digests(settings, client, reminders.queue),
    )


def build_digests(settings: Settings, client: Redis, queue: Queue) -> Digests | None:
    """The managers' digest, its jobs on `queue` (the reminders': scheduled posts, with a
    worker of their own); None while DIGEST_CHANNEL is unset."""
    if settings.digest_channel is None:
        return None
    return Digests(client, queue, Job.SEND_DIGEST.value, settings.digest_cron,
                   settings.digest_zone, timedelta(days=settings.audit_retention_days))


def build_webhooks(settings: Settings, client: Redis, jobs: Redis) -> Webhooks | None:
    """The webhook outbox and its receivers' record; None while WEBHOOK_URLS is unset."""
    if not settings.webhook_urls or settings.webhook_secret is None:
        return None
    return Webhooks(client, Queue(WEBHOOKS_QUEUE, connection=jobs), Job.DELIVER_WEBHOOK.value,
                    settings.webhook_urls, settings.webhook_secret.get_secret_value(),
                    settings.webhook_retry_schedule)


def poll_budget(settings: Settings, client: Redis, shared: SharedRateLimiter) -> PollBudget:
    """The status poller's bounded share of the account's Exotel budget (STATUS_POLL_SHARE)."""
    share = max(1, int(settings.exotel_rate_per_minute * settings.status_poll_share))
    own = SharedRateLimiter(client, share, key=f"exotel:{settings.exotel_account_sid}:poll")
    return PollBudget(shared, own)


def lookup_client(settings: Settings, timeout: float = 2) -> WebClient:
    """For look-ups: the timeout given (what is left of an ack's deadline), no retries (a
    retried look-up would be a repeated one)."""
    return WebClient(token=settings.slack_bot_token.get_secret_value(),
                     # slack_sdk annotates timeout as int; it passes it on to urllib as is
                     base_url=settings.slack_api_url, timeout=timeout,  # type: ignore[arg-type]
                     retry_handlers=[])


def _refresh_group(commands: CommandQueue, group_id: str) -> None:
    # By name: the job module sits in the layer above this one.
    commands.enqueue(Job.REFRESH_USERGROUP, Reply.to(None), group_id)
