"""Requests as Slack sends them to the bot, signed with the test signing secret: the
product's own builders (bot.playground.signed), and a POST that sends one."""

from __future__ import annotations

import requests

from bot.playground import signed
from bot.playground.signed import (
    action_body,
    command_body,
    event_body,
    function_executed_body,
    link_shared_body,
    link_shared_event,
    message_action_body,
    shortcut_body,
    view_submission_body,
)
from testkit.env import SIGNING_SECRET

__all__ = ["action_body", "command_body", "event_body", "function_executed_body",
           "link_shared_body", "link_shared_event", "message_action_body", "post_signed",
           "shortcut_body", "sign", "view_submission_body"]


def sign(body: str, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    return signed.sign(body, secret, timestamp)


def post_signed(base_url: str, body: str,
                session: requests.Session | None = None) -> requests.Response:
    """POST `body` to the bot's /slack/events, signed like Slack; events go as JSON."""
    return (session or requests).post(f"{base_url}/slack/events", data=body.encode(),
                                      headers=sign(body), timeout=10)
