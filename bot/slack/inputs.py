"""Values from Slack's payloads (workflow inputs, form fields, events) checked before use.

Slash command text has its own parser (bot.slack.command_text); these are the structured values the
other surfaces send, each validated before it reaches Redis or Exotel."""

from __future__ import annotations

import re
from typing import Any

from bot.slack.command_text import MAX_LINKS, MAX_NOTE, UsageError

USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,20}")
TEAM_ID = re.compile(r"[TE][A-Z0-9]{2,20}")
MESSAGE_TS = re.compile(r"\d{1,12}\.\d{1,9}")
# Opaque ids Slack hands back to us as they are (function executions, unfurls, triggers).
OPAQUE_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")


def count_of(value: Any, default: int = 1) -> int:
    """A link count: a whole number 1–MAX_LINKS given as a number or digits; None → default."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise UsageError(f"The number of links must be a whole number from 1 to {MAX_LINKS}.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 1 <= value <= MAX_LINKS:
        shown = str(value)[:20]
        raise UsageError(f"The number of links must be a whole number from 1 to {MAX_LINKS}; "
                         f"“{shown}” is not.")
    return value


def note_of(value: Any) -> str:
    """A customer note: text up to MAX_NOTE characters, whitespace folded; None → ''."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UsageError("The customer note must be text.")
    note = " ".join(value.split())
    if len(note) > MAX_NOTE:
        raise UsageError(f"Please keep the customer note to {MAX_NOTE} characters "
                         f"(it has {len(note)}).")
    return note


def matches(pattern: re.Pattern[str], value: Any) -> str | None:
    """`value` if it is a string of `pattern`'s shape, else None."""
    return value if isinstance(value, str) and pattern.fullmatch(value) else None
