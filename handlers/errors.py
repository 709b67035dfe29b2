"""Errors raised inside a listener before it handed its work to the job engine."""

from __future__ import annotations

import json
from logging import Logger

from slack_bolt import App, BoltResponse

from bot.slack import messages


def on_error(error: Exception, response: BoltResponse | None, logger: Logger) -> None:
    logger.error("listener failed", exc_info=error)
    if response is None:  # already acknowledged; the listener's own path reports it
        return
    # A 200 with a readable reply: Slack shows the requester this text, not "failed".
    response.status = 200
    response.headers = {"content-type": ["application/json;charset=utf-8"]}
    response.body = json.dumps(messages.problem(error))


def register(app: App) -> None:
    app.error(on_error)
