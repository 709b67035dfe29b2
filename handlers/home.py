"""The App Home tab: each user's live links, refreshed when they open it."""

from __future__ import annotations

from logging import Logger
from typing import Any

from slack_bolt import App, BoltContext

from bot.domain.store import StoreUnavailable
from bot.engine.queue import Reply
from bot.engine.registry import Job
from bot.slack.core import Core
from bot.slack.inputs import requester_from


def home_opened(event: dict[str, Any], body: dict[str, Any], context: BoltContext,
                logger: Logger) -> None:
    if event.get("tab") not in (None, "home"):
        return
    core: Core = context["core"]
    viewer = requester_from(body, user=event.get("user"), channel=event.get("channel"))
    try:
        core.commands.enqueue(Job.REFRESH_HOME, Reply.to(None), viewer)
    except StoreUnavailable:
        logger.warning("App Home of %s not refreshed: Redis is not answering", viewer.user_id)


def register(app: App) -> None:
    app.event("app_home_opened")(home_opened)
