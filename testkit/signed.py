"""Requests as Slack sends them to the bot: commands, clicks, events, shortcuts, forms and
workflow steps, signed with the test signing secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import requests

from testkit.env import SIGNING_SECRET


def sign(body: str, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


def command_body(command: str, text: str, response_url: str, user_id: str = "U0REP",
                 channel_id: str = "C0SALES", team_id: str = "T0FAKE") -> str:
    return urlencode({
        "token": "legacy-verification-token", "team_id": team_id, "team_domain": "fake",
        "channel_id": channel_id, "channel_name": "sales", "user_id": user_id,
        "user_name": "rep", "command": command, "text": text, "api_app_id": "A0BOT",
        "response_url": response_url, "trigger_id": "1.2.3",
    })


def action_body(action_id: str, value: str, response_url: str, user_id: str = "U0REP",
                channel_id: str = "C0SALES", team_id: str = "T0FAKE") -> str:
    """A signed-ready block_actions request, as Slack sends it when a button is clicked."""
    payload = {
        "type": "block_actions", "api_app_id": "A0BOT", "token": "legacy", "trigger_id": "1.2",
        "team": {"id": team_id, "domain": "fake"}, "user": {"id": user_id, "team_id": team_id},
        "channel": {"id": channel_id, "name": "sales"}, "response_url": response_url,
        "container": {"type": "message", "channel_id": channel_id, "is_ephemeral": False},
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": value,
                     "action_ts": str(time.time())}],
    }
    return urlencode({"payload": json.dumps(payload)})


def event_body(event: dict[str, Any], team_id: str = "T0FAKE") -> str:
    """An Events API callback, as Slack posts it (JSON)."""
    return json.dumps({"token": "legacy", "team_id": team_id, "api_app_id": "A0BOT",
                       "type": "event_callback", "event_id": "Ev0", "event_time": int(time.time()),
                       "event": event})


def _interactive(payload: dict[str, Any]) -> str:
    return urlencode({"payload": json.dumps(payload)})


def shortcut_body(callback_id: str, user_id: str = "U0REP", team_id: str = "T0FAKE",
                  trigger_id: str = "12345.98765.abcd") -> str:
    """A global shortcut (`shortcut`), as Slack posts it."""
    return _interactive({
        "type": "shortcut", "token": "legacy", "action_ts": str(time.time()),
        "team": {"id": team_id, "domain": "fake"},
        "user": {"id": user_id, "username": "rep", "team_id": team_id},
        "is_enterprise_install": False, "enterprise": None, "callback_id": callback_id,
        "trigger_id": trigger_id, "api_app_id": "A0BOT",
    })


def message_action_body(callback_id: str, response_url: str, message: dict[str, Any],
                        channel_id: str = "C0SALES", user_id: str = "U0REP",
                        team_id: str = "T0FAKE") -> str:
    """A message shortcut (`message_action`) on `message`, as Slack posts it."""
    return _interactive({
        "type": "message_action", "token": "legacy", "action_ts": str(time.time()),
        "team": {"id": team_id, "domain": "fake"},
        "user": {"id": user_id, "username": "rep", "team_id": team_id},
        "channel": {"id": channel_id, "name": "sales"}, "is_enterprise_install": False,
        "callback_id": callback_id, "trigger_id": "12345.98765.efgh",
        "response_url": response_url, "message_ts": message["ts"], "message": message,
        "api_app_id": "A0BOT",
    })


def view_submission_body(callback_id: str, values: dict[str, dict[str, Any]],
                         user_id: str = "U0REP", team_id: str = "T0FAKE") -> str:
    """A modal's `view_submission`; `values` maps block_id to its action's state."""
    return _interactive({
        "type": "view_submission", "token": "legacy", "api_app_id": "A0BOT",
        "team": {"id": team_id, "domain": "fake"},
        "user": {"id": user_id, "username": "rep", "team_id": team_id},
        "trigger_id": "12345.98765.ijkl", "is_enterprise_install": False,
        "view": {"id": "V0FORM", "team_id": team_id, "type": "modal", "callback_id": callback_id,
                 "private_metadata": "", "hash": "1.abc", "app_id": "A0BOT",
                 "bot_id": "B0BOT", "blocks": [],
                 "state": {"values": {block: {block: state} for block, state in values.items()}}},
        "response_urls": [],
    })


def function_executed_body(callback_id: str, inputs: dict[str, Any],
                           execution_id: str = "Fx0STEP",
                           bot_access_token: str = "xwfp-test-step-token-3a1b",
                           team_id: str = "T0FAKE") -> str:
    """A `function_executed` event: a workflow ran the app's step `callback_id`."""
    return json.dumps({
        "token": "legacy", "team_id": team_id, "api_app_id": "A0BOT", "type": "event_callback",
        "event_id": f"Ev{execution_id}", "event_time": int(time.time()),
        "event": {
            "type": "function_executed",
            "function": {"id": "Fn0STEP", "callback_id": callback_id, "title": "Step",
                         "type": "app", "input_parameters": [], "output_parameters": [],
                         "app_id": "A0BOT", "date_created": 1700000000,
                         "date_updated": 1700000000, "date_deleted": 0},
            "inputs": inputs, "function_execution_id": execution_id,
            "workflow_execution_id": "Wx0FLOW", "event_ts": f"{time.time():.6f}",
            "bot_access_token": bot_access_token,
        },
    })


def link_shared_event(urls: list[str], channel: str = "C0SALES", user: str = "U0REP",
                      message_ts: str = "1700000000.000100") -> dict[str, Any]:
    """The inner `link_shared` event for event_body()."""
    return {"type": "link_shared", "channel": channel, "is_bot_user_member": True,
            "user": user, "message_ts": message_ts,
            "unfurl_id": f"{channel}.{message_ts}.fake", "source": "conversations_history",
            "links": [{"domain": "messaging.exotel.com", "url": url} for url in urls],
            "event_ts": f"{time.time():.6f}"}


def link_shared_body(urls: list[str], **fields: Any) -> str:
    """A whole `link_shared` Events API callback (see link_shared_event)."""
    return event_body(link_shared_event(urls, **fields))


def post_signed(base_url: str, body: str,
                session: requests.Session | None = None) -> requests.Response:
    """POST `body` to the bot's /slack/events, signed like Slack; events go as JSON."""
    headers = sign(body)
    if body.startswith("{"):
        headers["Content-Type"] = "application/json"
    return (session or requests).post(f"{base_url}/slack/events", data=body.encode(),
                                      headers=headers, timeout=10)
