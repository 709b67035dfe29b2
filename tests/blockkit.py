"""Reading Slack messages in tests: their mrkdwn and plain texts, and Slack's limits on them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from bot.playground import blockkit

# An onboarding link as the bot shows it; its group is the token.
LINK = re.compile(r"https://messaging\.exotel\.com/ua-links/isv-onboard/([0-9a-f-]+)")
BLOCKS_JSON_LIMIT = 13_000  # well inside what Slack refuses as msg_blocks_too_long
# What Slack treats as markup inside <...>: mentions, specials (<!date^...>) and links.
_CONTROL = re.compile(r"<(?:[@#!][^<>]*|https?://[^<>\s]*)>")


def blocks_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = message.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else blocks


def text_objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every text object (mrkdwn or plain_text) anywhere inside `value`."""
    if isinstance(value, dict):
        if value.get("type") in ("mrkdwn", "plain_text") and isinstance(value.get("text"), str):
            yield value
        for child in value.values():
            yield from text_objects(child)
    elif isinstance(value, list):
        for child in value:
            yield from text_objects(child)


def mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    """Every text Slack renders as mrkdwn: the fallback `text` and each mrkdwn object."""
    texts = [o["text"] for o in text_objects(blocks_of(message)) if o["type"] == "mrkdwn"]
    return [message.get("text") or "", *texts]


def stray_brackets(mrkdwn: str) -> str:
    """What is left of `<` and `>` once Slack's own markup is taken out: should be nothing."""
    return "".join(c for c in _CONTROL.sub("", mrkdwn) if c in "<>")


def assert_within_slack_limits(message: dict[str, Any]) -> None:
    """Blocks Slack accepts (the stand-in Slack's own check: slack_sdk's models, at most
    50 blocks), well inside the size Slack refuses."""
    blocks = blocks_of(message)
    assert blocks
    assert blockkit.problems(blocks) == []
    assert len(json.dumps(blocks)) < BLOCKS_JSON_LIMIT


def assert_inert(message: dict[str, Any], *raw: str) -> None:
    """None of `raw` appears unescaped in mrkdwn, and no mrkdwn has a stray < or >."""
    for text in mrkdwn_texts(message):
        for fragment in raw:
            assert fragment not in text
        assert stray_brackets(text) == "", text


def block_text(message: dict[str, Any]) -> str:
    """All the text a Slack message shows, for assertions."""
    blocks = message.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    parts = [message.get("text") or ""]
    for block in blocks:
        if "text" in block:
            parts.append(block["text"]["text"])
        for element in block.get("elements", []):
            if "text" in element:
                parts.append(element["text"] if isinstance(element["text"], str)
                             else element["text"]["text"])
    return "\n".join(parts)
