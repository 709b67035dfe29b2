"""The factory: settings in, a wired Bolt app and the services behind it out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis import Redis
from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.background import Background
from bot.exotel import ExotelClient
from bot.onboarding import Onboarding
from bot.ratelimit import SharedRateLimiter
from bot.settings import Settings
from bot.store import TokenStore, connect
from handlers import register_listeners

log = logging.getLogger(__name__)

# Commands whose Exotel work may run at once in one process; more wait their turn.
WORK_THREADS = 32


@dataclass
class Services:
    settings: Settings
    store: TokenStore
    onboarding: Onboarding
    background: Background


def build_services(settings: Settings, redis: Redis | None = None) -> Services:
    if redis is None:
        if settings.redis_url is None:
            raise ValueError("REDIS_URL must be resolved before building services")
        redis = connect(settings.redis_url)
    store = TokenStore(redis)
    limiter = SharedRateLimiter(
        redis, settings.exotel_rate_per_minute, key=f"exotel:{settings.exotel_account_sid}"
    )
    exotel = ExotelClient(
        base_url=settings.exotel_url,
        account_sid=settings.exotel_account_sid,
        api_key=settings.exotel_api_key,
        api_token=settings.exotel_api_token.get_secret_value(),
        limiter=limiter,
        timeout=settings.exotel_timeout,
        deadline=settings.exotel_deadline,
    )
    return Services(settings=settings, store=store, onboarding=Onboarding(exotel, store),
                    background=Background(WORK_THREADS))


def slack_client(settings: Settings) -> WebClient:
    """The Web API client for everything the bot posts; waits out Slack's rate limits."""
    return WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        retry_handlers=[ConnectionErrorRetryHandler(), RateLimitErrorRetryHandler(max_retry_count=3)],
    )


def create_app(services: Services) -> App:
    settings = services.settings
    app = App(
        client=slack_client(settings),
        signing_secret=(
            settings.slack_signing_secret.get_secret_value()
            if settings.slack_signing_secret else None
        ),
        request_verification_enabled=not settings.socket_mode,
        # Listeners only parse, ack and hand slow work to `Background`, so running them on
        # the request's own thread answers Slack at once, with no polling for the ack.
        process_before_response=True,
        logger=logging.getLogger("slack_bolt"),
    )
    register_listeners(app, services)
    return app
