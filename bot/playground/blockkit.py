"""Block Kit as Slack checks it: the stand-in Slack refuses what Slack would refuse, so a
layout bug shows in the playground (and the tests) before a workspace sees it.

The checks are slack_sdk's own block models: an unknown type, a missing field or a text
over its limit is refused, as Slack answers `invalid_blocks`."""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

from bot.slack.blocks import MAX_BLOCKS as MESSAGE_BLOCKS  # a message's
from bot.slack.delivery import MAX_VIEW_BLOCKS as VIEW_BLOCKS  # App Home's and a modal's

__all__ = ["MESSAGE_BLOCKS", "VIEW_BLOCKS", "problems"]


def problems(blocks: Any, limit: int = MESSAGE_BLOCKS) -> list[str]:
    """What Slack would refuse in `blocks` (a list, or its JSON text); empty if nothing."""
    if blocks is None:
        return []
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return ["blocks are not JSON"]
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    found = []
    if len(blocks) > limit:
        found.append(f"{len(blocks)} blocks is over the limit of {limit}")
    for index, block in enumerate(blocks):
        found.extend(f"block {index}: {problem}" for problem in _block_problems(block))
    return found


def _block_problems(block: Any) -> list[str]:
    if not isinstance(block, dict) or "type" not in block:
        return ["a block must be an object with a type"]
    try:
        parsed = Block.parse(dict(block))
        if parsed is None or type(parsed) is Block:
            return [f"unknown block type {str(block['type'])[:40]!r}"]
        parsed.to_dict()  # runs the model's validators, nested elements' too
    except SlackObjectFormationError as error:
        return [str(error)]
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        return [f"malformed {block['type']} block ({error})"]
    return []
