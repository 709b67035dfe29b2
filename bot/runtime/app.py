"""The factory: the core in, a Bolt app whose listeners find that core in their context out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltContext

import handlers
from bot.slack.core import Core
from bot.slack.delivery import MarkedAck
from bot.telemetry import logs


def create_app(core: Core) -> App:
    settings = core.settings
    bolt_logger = logging.getLogger("slack_bolt")
    if bolt_logger.level == logging.NOTSET:
        # Bolt tests `logger.level <= DEBUG`, not the effective level: left at NOTSET, it
        # would format a debug line for every middleware of every request, then drop it.
        bolt_logger.setLevel(bolt_logger.getEffectiveLevel())
    if not any(isinstance(f, logs.WithoutBoltTokenNotice) for f in bolt_logger.filters):
        bolt_logger.addFilter(logs.WithoutBoltTokenNotice())
    app = App(
        client=core.slack,
        signing_secret=(
            settings.slack_signing_secret.get_secret_value()
            if settings.slack_signing_secret else None
        ),
        request_verification_enabled=not settings.socket_mode,
        # Listeners only parse, authorise and enqueue, so running them on the request's own
        # thread answers Slack as soon as the work is safely in Redis.
        process_before_response=True,
        logger=bolt_logger,
    )

    @app.middleware
    def give_listeners_the_core(context: BoltContext, next: Callable[[], None]) -> None:
        context["core"] = core  # listeners take their dependencies from Bolt's context
        if core.delivery.sandbox:  # every ack says "Sandbox" too
            context["ack"] = MarkedAck(core.delivery)
        next()

    @app.middleware
    def count_requests(body: dict[str, Any], next: Callable[[], None]) -> None:
        core.metrics.slack_request(str(body.get("command") or body.get("type") or "other"))
        next()

    handlers.register(app)
    return app
