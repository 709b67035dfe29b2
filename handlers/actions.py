"""Buttons: Renew, Stop reminding, Post to channel, Forget."""

from __future__ import annotations

from logging import Logger
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App, Respond

from bot import jobs, linkviews
from bot.commands import OnboardRequest, UsageError, parse_onboard
from bot.messages import FORGET_ACTION, RENEW_ACTION, SHARE_ACTION, STOP_ACTION
from bot.models import Requester
from handlers.enqueue import enqueue_then_ack
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
    def renew(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond,
              logger: Logger) -> None:
        clicker = clicker_of(body)
        url = body.get("response_url")
        decision = core.access.may_issue(clicker.user_id, clicker.channel_id)
        if not decision.allowed:
            enqueue_then_ack(core, ack, jobs.respond, url,
                             refusal(core, clicker, "renew", decision.reason), respond=respond)
            return
        enqueue_then_ack(core, ack, jobs.renew_batch, url, clicker, action["value"],
                         jobs.new_batch_id(), idempotent=False, respond=respond)

    @app.action(STOP_ACTION)
    def stop(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond,
             logger: Logger) -> None:
        enqueue_then_ack(core, ack, jobs.stop_reminders, body.get("response_url"),
                         clicker_of(body), action["value"], respond=respond)

    @app.action(SHARE_ACTION)
    def share(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond,
              logger: Logger) -> None:
        enqueue_then_ack(core, ack, jobs.share_batch, body.get("response_url"),
                         clicker_of(body), action["value"], respond=respond)

    @app.action(FORGET_ACTION)
    def forget(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond,
               logger: Logger) -> None:
        enqueue_then_ack(core, ack, jobs.forget, body.get("response_url"), clicker_of(body),
                         None, action["value"], respond=respond)

    @app.action(linkviews.ISSUE_ANYWAY_ACTION)
    def issue_anyway(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond,
                     logger: Logger) -> None:
        """"Issue a new one anyway": the repeat-issue answer's count and note, parsed again
        as the command would (the value comes back from Slack, so it is checked again)."""
        clicker = clicker_of(body)
        url = body.get("response_url")
        try:
            request = parse_onboard(str(action.get("value") or ""))
        except UsageError:
            request = None
        if not isinstance(request, OnboardRequest):
            ack()
            return
        decision = core.access.may_issue(clicker.user_id, clicker.channel_id)
        if not decision.allowed:
            enqueue_then_ack(core, ack, jobs.respond, url,
                             refusal(core, clicker, "issue", decision.reason), respond=respond)
            return
        enqueue_then_ack(core, ack, jobs.issue_links, url, clicker, request.count, request.note,
                         jobs.new_batch_id(), False, True, idempotent=False, respond=respond)
