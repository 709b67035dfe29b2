"""Buttons: Renew, Stop reminding, Post to channel, Forget."""

from __future__ import annotations

from logging import Logger
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App

from bot import tasks
from bot.messages import FORGET_ACTION, RENEW_ACTION, SHARE_ACTION, STOP_ACTION
from bot.models import Requester
from handlers.refusal import refusal

if TYPE_CHECKING:
    from bot.app import Services


def clicker_of(body: dict[str, Any]) -> Requester:
    return Requester(team_id=(body.get("team") or {}).get("id", ""),
                     user_id=(body.get("user") or {}).get("id", ""),
                     channel_id=(body.get("channel") or {}).get("id", ""))


def register(app: App, services: Services) -> None:
    core = services.core

    @app.action(RENEW_ACTION)
    def renew(ack: Ack, body: dict[str, Any], action: dict[str, Any], logger: Logger) -> None:
        ack()
        clicker = clicker_of(body)
        decision = core.access.may_issue(clicker.user_id, clicker.channel_id)
        if not decision.allowed:
            services.background.submit(body.get("response_url"), tasks.say,
                                       refusal(core, clicker, "renew", decision.reason))
            return
        services.background.submit(body.get("response_url"), tasks.renew_batch, clicker,
                                   action["value"])

    @app.action(STOP_ACTION)
    def stop(ack: Ack, body: dict[str, Any], action: dict[str, Any], logger: Logger) -> None:
        ack()
        services.background.submit(body.get("response_url"), tasks.stop_reminders,
                                   clicker_of(body), action["value"])

    @app.action(SHARE_ACTION)
    def share(ack: Ack, body: dict[str, Any], action: dict[str, Any], logger: Logger) -> None:
        ack()
        services.background.submit(body.get("response_url"), tasks.share_batch,
                                   clicker_of(body), action["value"])

    @app.action(FORGET_ACTION)
    def forget(ack: Ack, body: dict[str, Any], action: dict[str, Any], logger: Logger) -> None:
        ack()
        services.background.submit(body.get("response_url"), tasks.forget, clicker_of(body),
                                   None, action["value"])
