"""Onboarding tokens: what one looks like, how to find it in a link, how to show it safely."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# Exotel's tokens are UUIDs ("41eabcd-abcdabcd" in its docs): accept what could plausibly be
# one (6 to 128 letters, digits, - and _, at least one digit) and nothing that could smuggle a
# path or query into the validate URL, or that is plainly a word ("garbage"): those are
# refused before they cost a request of Exotel's budget.
TOKEN_PATTERN = re.compile(r"(?=[A-Za-z_-]*[0-9])[A-Za-z0-9_-]{6,128}")
TOKEN_RULE = "letters, digits, - and _, 6 to 128 of them, at least one a digit"
_SLACK_LINK = re.compile(r"^<([^<>|]+)(?:\|[^<>]*)?>$")
_TRAILING = ".,;:!?)]}>\"'"


def is_token(text: str) -> bool:
    return TOKEN_PATTERN.fullmatch(text) is not None


def token_from_link(url: str) -> str | None:
    """The token in an onboarding link: its last path segment, if that is a plausible token."""
    path = urlsplit(url).path.rstrip("/")
    last = path.rsplit("/", 1)[-1]
    return last if is_token(last) else None


def parse_token_argument(text: str) -> str | None:
    """The token in what a user typed after /check-token: a bare token or a whole link.

    Accepts Slack's escaped form (<https://...|label>), surrounding quotes and trailing
    punctuation or slashes. Returns None for anything that is not one plausible token.
    """
    text = text.strip()
    match = _SLACK_LINK.match(text)
    if match:
        text = match.group(1)
    text = text.strip().strip("`\"'").rstrip(_TRAILING)
    if not text or any(c.isspace() for c in text):
        return None
    if "://" in text or text.startswith("messaging."):
        return token_from_link(text if "://" in text else f"https://{text}")
    return text if is_token(text) else None


def mask(token: str) -> str:
    """A token with all but its last four characters hidden, for logs, audits and channels."""
    return f"…{token[-4:]}"
