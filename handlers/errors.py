"""Errors raised inside a listener before it handed its work to the job engine."""

from __future__ import annotations

import json
from logging import Logger

from slack_bolt import App, BoltContext, BoltResponse

from bot.slack import messages
from bot.slack.core import Core
from bot.slack.inputs import UnreadablePayload


def on_error(error: Exception, response: BoltResponse | None, context: BoltContext,
             logger: Logger) -> None:
    if isinstance(error, UnreadablePayload):
        logger.warning("listener refused a payload: %s", error)
    else:
        logger.error("listener failed", exc_info=error)
    if response is None:  # already acknowledged; the listener's own path reports it
        return
    message = messages.problem(error)
    core: Core | None = context.get("core")
    if core is not None:
        message = core.delivery.mark(message)
    # A 200 with a readable reply: Slack shows the requester this text, not "failed".
    response.status = 200
    response.headers = {"content-type": ["application/json;charset=utf-8"]}
    response.body = json.dumps(message)


def register(app: App) -> None:
    app.error(on_error)
