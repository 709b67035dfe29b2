"""Link previews: `link_shared` for Exotel's onboarding links → a job → chat.unfurl.

Who may see a preview is the access policy's `may_preview`."""

from __future__ import annotations

from logging import Logger
from typing import Any

from slack_bolt import App, BoltContext

from bot.domain.previews import MAX_PREVIEWS, token_of
from bot.engine.queue import UnfurlTarget
from bot.engine.registry import Job
from bot.slack.core import Core
from bot.slack.inputs import (
    CHANNEL_ID,
    MESSAGE_TS,
    OPAQUE_ID,
    USER_ID,
    matches,
    requester_from,
)
from handlers.enqueue import enqueue_or_tell
from handlers.refusal import refusal


def link_shared(event: dict[str, Any], body: dict[str, Any], context: BoltContext,
                logger: Logger) -> None:
    urls = [link["url"] for link in event.get("links") or []
            if isinstance(link, dict) and isinstance(link.get("url"), str)
            and len(link["url"]) <= 500 and token_of(link["url"])][:MAX_PREVIEWS]
    user = matches(USER_ID, event.get("user"))
    target = _target(event)
    if not urls or user is None or target is None:
        return
    core: Core = context["core"]
    requester = requester_from(body, user=user, channel=target.channel)

    def unavailable(_: Any) -> None:
        logger.warning("no preview for %s: Redis is not answering", user)

    decision = core.access.may_preview(requester.user_id, requester.channel_id)
    if not decision.allowed:
        message = refusal(core, requester, "unfurl", decision.reason)
        if requester.channel_id:
            enqueue_or_tell(core, Job.TELL_PRIVATELY, None, requester.channel_id, user,
                            message, then=lambda: None, tell=unavailable)
        return
    enqueue_or_tell(core, Job.UNFURL_LINKS, None, requester, target, urls,
                    then=lambda: None, tell=unavailable)


def _target(event: dict[str, Any]) -> UnfurlTarget | None:
    source = event.get("source")
    if source == "composer":  # a message being written: no channel or ts yet
        unfurl_id = matches(OPAQUE_ID, event.get("unfurl_id"))
        return UnfurlTarget("", "", unfurl_id, "composer") if unfurl_id else None
    channel = matches(CHANNEL_ID, event.get("channel"))
    ts = matches(MESSAGE_TS, event.get("message_ts"))
    return UnfurlTarget(channel, ts) if channel and ts else None


def register(app: App) -> None:
    app.event("link_shared")(link_shared)
