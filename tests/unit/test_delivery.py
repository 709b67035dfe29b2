"""bot/slack/delivery.py: the sandbox marker goes on every message and view once, whatever
sends it, and on none while the bot talks to Exotel itself."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import create_autospec

from slack_sdk import WebClient

from bot.slack import messages
from bot.slack.blocks import MAX_BLOCKS, Message, text_message
from bot.slack.delivery import SANDBOX_TEXT, Delivery, MarkedAck


def delivery(sandbox: bool) -> tuple[Delivery, Any]:
    slack = create_autospec(WebClient, instance=True)
    slack.conversations_open.return_value = {"channel": {"id": "D0DM"}}
    return Delivery(slack, lambda: sandbox), slack


def marked(message: dict[str, Any]) -> bool:
    has_block = any(SANDBOX_TEXT in str(block) for block in message.get("blocks", []))
    text = message.get("text")
    return has_block and (text is None or text.startswith("[sandbox] "))


def test_a_message_is_marked_once_and_keeps_its_blocks() -> None:
    sending, _ = delivery(sandbox=True)
    message = text_message("hello")
    once = sending.mark(message)
    assert marked(once) and once["blocks"][:-1] == message["blocks"]
    assert sending.mark(once) == once  # marking again changes nothing
    assert not marked(message)  # the original is left as it was


def test_a_full_message_stays_within_slacks_fifty_blocks() -> None:
    sending, _ = delivery(sandbox=True)
    full: Message = {"text": "x", "blocks": [{"type": "divider"}] * MAX_BLOCKS}
    assert len(sending.mark(full)["blocks"]) == MAX_BLOCKS and marked(sending.mark(full))


def test_nothing_is_marked_while_the_bot_talks_to_exotel() -> None:
    sending, slack = delivery(sandbox=False)
    message = text_message("hello")
    assert sending.mark(message) is message
    sending.direct_message("U0REP", message)
    sending.publish_home("U0REP", {"type": "home", "blocks": []})
    assert not marked(slack.chat_postMessage.call_args.kwargs)
    assert slack.views_publish.call_args.kwargs["view"]["blocks"] == []


def test_posts_dms_views_and_previews_are_marked() -> None:
    sending, slack = delivery(sandbox=True)
    sending.post("C0SALES", messages.stopped(), thread_ts="1.2")
    sending.direct_message("U0REP", messages.stopped())
    sending.ephemeral("C0SALES", "U0REP", messages.stopped())
    sending.publish_home("U0REP", {"type": "home", "blocks": []})
    sending.unfurl({"channel": "C0SALES", "ts": "1.2"}, {"https://x/1": {"blocks": []}})
    posts = [call.kwargs for call in slack.chat_postMessage.call_args_list]
    assert [p["channel"] for p in posts] == ["C0SALES", "D0DM"] and posts[0]["thread_ts"] == "1.2"
    assert all(marked(p) for p in posts)
    assert "response_type" not in posts[0]  # a post takes only what chat.postMessage knows
    assert marked(slack.chat_postEphemeral.call_args.kwargs)
    assert marked(slack.views_publish.call_args.kwargs["view"])
    assert marked(slack.chat_unfurl.call_args.kwargs["unfurls"]["https://x/1"])


def test_an_ack_with_a_message_is_marked_and_one_without_is_left_alone() -> None:
    sending, _ = delivery(sandbox=True)
    ack = MarkedAck(sending)
    ack(**messages.onboard_help())
    assert ack.response is not None and marked(json.loads(ack.response.body))
    empty = MarkedAck(sending)
    empty(response_action="errors", errors={"count": "bad"})
    assert empty.response is not None and "blocks" not in empty.response.body
