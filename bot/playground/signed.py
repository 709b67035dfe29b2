"""Requests as Slack sends them to the bot: commands, clicks, events, shortcuts, forms and
workflow steps, signed with the app's signing secret.

The one home of these shapes: the playground's stand-in Slack sends them to the bot, and the
tests (testkit.signed) send them with the test secret. Each builder gives the body; `sign`
gives the headers that go with it, computed by slack_sdk's own SignatureVerifier."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

TEAM = "T0FAKE"
USER = "U0REP"
CHANNEL = "C0SALES"
APP = "A0BOT"


def sign(body: str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with `body`: its timestamp and signature."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None  # None only for a missing timestamp
    content_type = "application/json" if body.startswith("{") else \
        "application/x-www-form-urlencoded"
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
            "Content-Type": content_type}


def command_body(command: str, text: str, response_url: str, user_id: str = USER,
                 channel_id: str = CHANNEL, team_id: str = TEAM,
                 trigger_id: str = "1.2.3") -> str:
    return urlencode({
        "token": "legacy-verification-token", "team_id": team_id, "team_domain": "fake",
        "channel_id": channel_id, "channel_name": "sales", "user_id": user_id,
        "user_name": "rep", "command": command, "text": text, "api_app_id": APP,
        "response_url": response_url, "trigger_id": trigger_id,
    })


def action_body(action_id: str, value: str, response_url: str, user_id: str = USER,
                channel_id: str = CHANNEL, team_id: str = TEAM, *, block_id: str = "b",
                message: dict[str, Any] | None = None, is_ephemeral: bool = False,
                trigger_id: str = "1.2") -> str:
    """A block_actions request, as Slack sends it when a button is clicked."""
    container: dict[str, Any] = {"type": "message", "channel_id": channel_id,
                                 "is_ephemeral": is_ephemeral}
    payload: dict[str, Any] = {
        "type": "block_actions", "api_app_id": APP, "token": "legacy", "trigger_id": trigger_id,
        "team": {"id": team_id, "domain": "fake"}, "user": {"id": user_id, "team_id": team_id},
        "channel": {"id": channel_id, "name": "sales"}, "response_url": response_url,
        "container": container,
        "actions": [{"type": "button", "action_id": action_id, "block_id": block_id,
                     "value": value, "action_ts": str(time.time())}],
    }
    if message is not None:
        container["message_ts"] = message.get("ts")
        payload["message"] = message
    return _interactive(payload)


def home_action_body(action_id: str, value: str, view: dict[str, Any], user_id: str = USER,
                     team_id: str = TEAM, *, block_id: str = "b",
                     trigger_id: str = "1.3") -> str:
    """A block_actions request from a button on App Home: a view, no channel, no response
    URL."""
    return _interactive({
        "type": "block_actions", "api_app_id": APP, "token": "legacy", "trigger_id": trigger_id,
        "team": {"id": team_id, "domain": "fake"}, "user": {"id": user_id, "team_id": team_id},
        "container": {"type": "view", "view_id": view.get("id", "V0HOME")},
        "view": view,
        "actions": [{"type": "button", "action_id": action_id, "block_id": block_id,
                     "value": value, "action_ts": str(time.time())}],
    })


def event_body(event: dict[str, Any], team_id: str = TEAM) -> str:
    """An Events API callback, as Slack posts it (JSON)."""
    return json.dumps({"token": "legacy", "team_id": team_id, "api_app_id": APP,
                       "type": "event_callback", "event_id": f"Ev{time.time_ns()}",
                       "event_time": int(time.time()), "event": event})


def home_opened_event(user_id: str = USER) -> dict[str, Any]:
    """The inner `app_home_opened` event, sent when a member opens the app's Home tab."""
    return {"type": "app_home_opened", "user": user_id, "channel": "D0HOME", "tab": "home",
            "event_ts": f"{time.time():.6f}"}


def _interactive(payload: dict[str, Any]) -> str:
    return urlencode({"payload": json.dumps(payload)})


def shortcut_body(callback_id: str, user_id: str = USER, team_id: str = TEAM,
                  trigger_id: str = "12345.98765.abcd") -> str:
    """A global shortcut (`shortcut`), as Slack posts it."""
    return _interactive({
        "type": "shortcut", "token": "legacy", "action_ts": str(time.time()),
        "team": {"id": team_id, "domain": "fake"},
        "user": {"id": user_id, "username": "rep", "team_id": team_id},
        "is_enterprise_install": False, "enterprise": None, "callback_id": callback_id,
        "trigger_id": trigger_id, "api_app_id": APP,
    })


def message_action_body(callback_id: str, response_url: str, message: dict[str, Any],
                        channel_id: str = CHANNEL, user_id: str = USER,
                        team_id: str = TEAM, trigger_id: str = "12345.98765.efgh") -> str:
    """A message shortcut (`message_action`) on `message`, as Slack posts it."""
    return _interactive({
        "type": "message_action", "token": "legacy", "action_ts": str(time.time()),
        "team": {"id": team_id, "domain": "fake"},
        "user": {"id": user_id, "username": "rep", "team_id": team_id},
        "channel": {"id": channel_id, "name": "sales"}, "is_enterprise_install": False,
        "callback_id": callback_id, "trigger_id": trigger_id,
        "response_url": response_url, "message_ts": message["ts"], "message": message,
        "api_app_id": APP,
    })


def view_submission_body(callback_id: str, values: dict[str, dict[str, Any]],
                         user_id: str = USER, team_id: str = TEAM, *,
                         view: dict[str, Any] | None = None,
                         state: dict[str, dict[str, Any]] | None = None) -> str:
    """A modal's `view_submission`; `values` maps block_id to its action's state, with the
    action id the block id's; or `state` is Slack's whole state.values (block id, then
    action id)."""
    state = state or {block: {block: value} for block, value in values.items()}
    submitted = {"id": "V0FORM", "team_id": team_id, "type": "modal",
                 "callback_id": callback_id, "private_metadata": "", "hash": "1.abc",
                 "app_id": APP, "bot_id": "B0BOT", "blocks": [], **(view or {}),
                 "state": {"values": state}}
    return _interactive({
        "type": "view_submission", "token": "legacy", "api_app_id": APP,
        "team": {"id": team_id, "domain": "fake"},
        "user": {"id": user_id, "username": "rep", "team_id": team_id},
        "trigger_id": "12345.98765.ijkl", "is_enterprise_install": False,
        "view": submitted, "response_urls": [],
    })


def function_executed_body(callback_id: str, inputs: dict[str, Any],
                           execution_id: str = "Fx0STEP",
                           bot_access_token: str = "xwfp-test-step-token-3a1b",
                           team_id: str = TEAM) -> str:
    """A `function_executed` event: a workflow ran the app's step `callback_id`."""
    return json.dumps({
        "token": "legacy", "team_id": team_id, "api_app_id": APP, "type": "event_callback",
        "event_id": f"Ev{execution_id}", "event_time": int(time.time()),
        "event": {
            "type": "function_executed",
            "function": {"id": "Fn0STEP", "callback_id": callback_id, "title": "Step",
                         "type": "app", "input_parameters": [], "output_parameters": [],
                         "app_id": APP, "date_created": 1700000000,
                         "date_updated": 1700000000, "date_deleted": 0},
            "inputs": inputs, "function_execution_id": execution_id,
            "workflow_execution_id": "Wx0FLOW", "event_ts": f"{time.time():.6f}",
            "bot_access_token": bot_access_token,
        },
    })


def link_shared_event(urls: list[str], channel: str = CHANNEL, user: str = USER,
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
