"""The factory: settings in, a wired Bolt app and the services behind it out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.background import Background
from bot.core import Core, build_core
from bot.settings import Settings
from handlers import register_listeners

# Commands whose Exotel work may run at once in one background process; more wait their turn.
WORK_THREADS = 32


@dataclass
class Services:
    core: Core
    background: Background


def build_services(settings: Settings) -> Services:
    return Services(core=build_core(settings), background=Background(settings, WORK_THREADS))


def slack_client(settings: Settings) -> WebClient:
    """The Web API client for everything the bot posts; waits out Slack's rate limits."""
    return WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        retry_handlers=[
            ConnectionErrorRetryHandler(),
            RateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )


def create_app(services: Services) -> App:
    settings = services.core.settings
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
