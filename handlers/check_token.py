"""`/check-token <token | link>`: ask Exotel whether a token still works."""

from __future__ import annotations

from logging import Logger
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App

from bot import jobs, messages
from bot.commands import Help, UsageError, parse_check
from handlers.enqueue import enqueue_then_ack
from handlers.onboard_link import requester_of
from handlers.refusal import refusal

if TYPE_CHECKING:
    from bot.app import Services


def register(app: App, services: Services) -> None:
    core = services.core

    @app.command("/check-token")
    def check_token(ack: Ack, command: dict[str, Any], logger: Logger) -> None:
        try:
            request = parse_check(command.get("text"))
        except UsageError as problem:
            ack(**messages.check_usage_problem(str(problem)))
            return
        if isinstance(request, Help):
            ack(**messages.check_help())
            return
        requester = requester_of(command)
        decision = core.access.may_check(requester.user_id, requester.channel_id)
        if not decision.allowed:
            ack(**refusal(core, requester, "check-token", decision.reason))
            return
        enqueue_then_ack(core, ack, jobs.check_token, command["response_url"], requester,
                         request.token, ack_with=messages.checking())
