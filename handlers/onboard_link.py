"""`/onboard-link [count] [customer note]`, `list [channel|all]` and `forget <link>`."""

from __future__ import annotations

from logging import Logger
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App

from bot.domain.models import Requester
from bot.domain.store import StoreUnavailable
from bot.runtime import jobs
from bot.slack import linkviews, messages
from bot.slack.command_text import ForgetRequest, Help, ListRequest, UsageError, parse_onboard
from handlers.enqueue import enqueue_then_ack
from handlers.refusal import refusal

if TYPE_CHECKING:
    from bot.slack.services import Services


def requester_of(command: dict[str, Any]) -> Requester:
    return Requester(team_id=command.get("team_id", ""), user_id=command.get("user_id", ""),
                     channel_id=command.get("channel_id", ""))


def register(app: App, services: Services) -> None:
    core = services.core

    @app.command("/onboard-link")
    def onboard_link(ack: Ack, command: dict[str, Any], logger: Logger) -> None:
        try:
            request = parse_onboard(command.get("text"))
        except UsageError as problem:
            ack(**messages.usage_problem(str(problem)))
            return
        if isinstance(request, Help):
            ack(**messages.onboard_help())
            return
        requester = requester_of(command)
        decision = (core.access.may_list(requester.user_id, requester.channel_id, request.scope)
                    if isinstance(request, ListRequest)
                    else core.access.may_issue(requester.user_id, requester.channel_id))
        if not decision.allowed:
            ack(**refusal(core, requester, "onboard-link", decision.reason))
            return
        if isinstance(request, ListRequest):
            try:
                listing = core.onboarding.live(requester, request.scope, messages.MAX_LISTED)
                ack(**linkviews.listing(listing, core.onboarding.details(listing),
                                        request.scope, requester.user_id))
            except StoreUnavailable as error:
                ack(**messages.problem(error))
            return
        response_url = command["response_url"]
        if isinstance(request, ForgetRequest):
            enqueue_then_ack(core, ack, jobs.forget, response_url, requester, request.token,
                             None)
            return
        enqueue_then_ack(core, ack, jobs.issue_links, response_url, requester, request.count,
                         request.note, jobs.new_batch_id(), idempotent=False,
                         ack_with=messages.working(request.count))
