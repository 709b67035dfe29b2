"""The factory: the core in, a Bolt app whose listeners find that core in their context out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltContext
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

import handlers
from bot.slack.core import Core
from bot.slack.delivery import MarkedAck


def create_app(core: Core) -> App:
    settings = core.settings
    bolt_logger = logging.getLogger("slack_bolt")
    if bolt_logger.level == logging.NOTSET:
        # Bolt tests `logger.level <= DEBUG`, not the effective level: left at NOTSET, it
        # would format a debug line for every middleware of every request, then drop it.
        bolt_logger.setLevel(bolt_logger.getEffectiveLevel())
    if not any(isinstance(f, WithoutTokenNotice) for f in bolt_logger.filters):
        bolt_logger.addFilter(WithoutTokenNotice())
    app = App(
        client=core.slack,
        signing_secret=(
            settings.slack_signing_secret.get_secret_value()
            if settings.slack_signing_secret else None
        ),
        # One check of Slack's signature: bot.runtime.web makes it on the raw bytes before
        # Bolt sees a request (the only way in over HTTP); Socket Mode's need none.
        request_verification_enabled=False,
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


class WithoutTokenNotice(logging.Filter):
    """Drops Bolt's "`token` will be unused" warning: Bolt reads SLACK_BOT_TOKEN from the
    environment on its own and warns that it goes unused beside the client it is given,
    which holds that very token. A warning at every start that asks nothing of anyone."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()
