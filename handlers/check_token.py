"""`/check-token <token | link>`: ask Exotel whether a token still works."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, BoltContext

from bot.domain.models import Requester
from bot.domain.store import StoreUnavailable, redis_errors
from bot.engine.registry import Job
from bot.slack import messages
from bot.slack.blocks import Message, text_message
from bot.slack.core import Core
from bot.slack.inputs import requester_from
from handlers.enqueue import enqueue_then_ack
from handlers.refusal import refusal
from handlers.slash import CHECK_TOKEN, parse_or_explain


def check_token(ack: Ack, command: dict[str, Any], context: BoltContext) -> None:
    core: Core = context["core"]
    if (request := parse_or_explain(ack, command, CHECK_TOKEN)) is None:
        return
    requester = requester_from(command)
    decision = core.access.may_check(requester.user_id, requester.channel_id)
    if not decision.allowed:
        ack(**refusal(core, requester, "check-token", decision.reason))
        return
    if (limited := rate_limited(core, requester)) is not None:
        ack(**limited)
        return
    enqueue_then_ack(core, ack, Job.CHECK_TOKEN, command["response_url"], requester,
                     request.token, ack_with=messages.checking())


def rate_limited(core: Core, requester: Requester) -> Message | None:
    """A refusal if the requester ran more checks this minute than CHECK_TOKEN_PER_MINUTE
    allows (every check costs Exotel's shared budget); Redis only, before the ack."""
    try:
        with redis_errors():
            retry_in = core.check_rate.hit(requester.team_id, requester.user_id)
    except StoreUnavailable as error:
        return messages.problem(error)
    if retry_in is None:
        return None
    limit = core.check_rate.per_minute
    core.onboarding.refused(requester, "check-token", f"more than {limit} checks a minute",
                            outcome="rate-limited")
    return text_message(
        f":hourglass: You can check at most {limit} tokens a minute, to keep Exotel's "
        f"request budget for everyone. Please try again in {retry_in:.0f} s.")


def register(app: App) -> None:
    app.command("/check-token")(check_token)
