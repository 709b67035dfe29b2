"""`/onboard-link [count] [customer note]`: issue tracked onboarding links to the requester."""

from __future__ import annotations

from logging import Logger
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App

from bot import messages, tasks
from bot.commands import Help, UsageError, parse_onboard
from bot.models import Requester

if TYPE_CHECKING:
    from bot.app import Services


def requester_of(command: dict[str, Any]) -> Requester:
    return Requester(team_id=command.get("team_id", ""), user_id=command.get("user_id", ""),
                     channel_id=command.get("channel_id", ""))


def register(app: App, services: Services) -> None:
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
        ack(**messages.working(request.count))
        services.background.submit(command["response_url"], tasks.issue_links,
                                   requester_of(command), request.count, request.note)
