"""Buttons: "Renew" issues a fresh batch like the reminded one; "Stop reminding" cancels."""

from __future__ import annotations

from logging import Logger
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App

from bot import tasks
from bot.messages import RENEW_ACTION, STOP_ACTION
from bot.models import Requester

if TYPE_CHECKING:
    from bot.app import Services


def clicker_of(body: dict[str, Any]) -> Requester:
    return Requester(team_id=(body.get("team") or {}).get("id", ""),
                     user_id=(body.get("user") or {}).get("id", ""),
                     channel_id=(body.get("channel") or {}).get("id", ""))


def register(app: App, services: Services) -> None:
    @app.action(RENEW_ACTION)
    def renew(ack: Ack, body: dict[str, Any], action: dict[str, Any], logger: Logger) -> None:
        ack()
        services.background.submit(body["response_url"], tasks.renew_batch, clicker_of(body),
                                   action["value"])

    @app.action(STOP_ACTION)
    def stop(ack: Ack, body: dict[str, Any], action: dict[str, Any], logger: Logger) -> None:
        ack()
        services.background.submit(body["response_url"], tasks.stop_reminders, action["value"])
