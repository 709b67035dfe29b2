"""What users type after the slash commands, read into requests the core understands."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Literal

from bot.exotel.tokens import TOKEN_RULE, parse_token_argument
from bot.settings import Settings
from bot.slack.inputs import (
    MAX_LINKS,
    REF_RULE,
    UsageError,
    count_of,
    note_of,
    ref_of,
    strip_bidi,
)

_NUMBERISH = re.compile(r"[+-]?(\d[\d.,_]*|[.,]\d[\d.,_]*)([eE][+-]?\d+)?")
HELP_WORDS = {"help", "-h", "--help", "?"}
# `ref:hubspot-12345`, anywhere in the text of a command that issues links: the customer's
# CRM reference, not part of the note.
REF_PREFIX = "ref:"
REF_EXAMPLE = "/onboard-link 2 ACME Corp ref:hubspot-12345"
# An email Slack turned into a link before sending it: `<mailto:a@b.example|a@b.example>`.
_MAILTO = re.compile(r"<mailto:([^|<>]+)(?:\|[^<>]*)?>", re.IGNORECASE)


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class OnboardRequest:
    count: int
    note: str
    customer_ref: str = ""


@dataclass(frozen=True)
class CheckRequest:
    token: str


@dataclass(frozen=True)
class ListRequest:
    scope: Literal["user", "channel", "all"]


@dataclass(frozen=True)
class ForgetRequest:
    token: str


@dataclass(frozen=True)
class ReportRequest:
    days: int


REPORT_DAYS = 7  # `/onboard-link report` alone: the last week
# AUDIT_RETENTION_DAYS's default: how far back the history goes, unless told otherwise.
DEFAULT_MOST_DAYS: int = Settings.model_fields["audit_retention_days"].default


LIST_SCOPES: dict[str, Literal["user", "channel", "all"]] = {
    "": "user", "mine": "user", "channel": "channel", "all": "all"}


def _text(raw: str | None) -> str:
    # Slack HTML-escapes &, < and > in command text; keep what the user actually typed.
    return strip_bidi(html.unescape(raw or "")).strip()


OnboardText = OnboardRequest | ListRequest | ForgetRequest | ReportRequest | Help


def parse_onboard(raw: str | None, *, report_days: int = DEFAULT_MOST_DAYS) -> OnboardText:
    """`report_days`: the most days a report may cover (AUDIT_RETENTION_DAYS)."""
    text, customer_ref = _take_ref(_text(raw))
    request = _parse_onboard(text, report_days)
    if customer_ref is None or isinstance(request, Help):
        return request
    if not isinstance(request, OnboardRequest):
        raise UsageError("A `ref:` goes with new links, not with `list`, `forget` or "
                         "`report`: "
                         f"`{REF_EXAMPLE}`.")
    return OnboardRequest(request.count, request.note, customer_ref)


def _take_ref(text: str) -> tuple[str, str | None]:
    """The text without its `ref:` word, and the reference that word gives (None: no such
    word). The word is the reference's only way in: one, not empty, checked by `ref_of`."""
    words = text.split()
    at = [i for i, word in enumerate(words) if word[:len(REF_PREFIX)].casefold() == REF_PREFIX]
    if not at:
        return text, None
    if len(at) > 1:
        raise UsageError(f"Please give one CRM reference only; this has {len(at)} `ref:` "
                         f"words. Like this: `{REF_EXAMPLE}`.")
    value = _MAILTO.sub(r"\1", words.pop(at[0])[len(REF_PREFIX):])
    if not value:
        raise UsageError(f"Put the CRM reference right after `ref:`, with no space: {REF_RULE}. "
                         f"Like this: `{REF_EXAMPLE}`.")
    return " ".join(words), ref_of(value)


def _parse_onboard(text: str, report_days: int) -> OnboardText:
    first = text.split(maxsplit=1)[0] if text else ""  # any whitespace: newline, no-break space
    if first.lower() in HELP_WORDS:
        return Help()
    if first.lower() == "report":
        return _report(text[len(first):].strip(), report_days)
    if first.lower() == "list":
        scope = LIST_SCOPES.get(text[len(first):].strip().lower())
        if scope is None:
            raise UsageError("Use `/onboard-link list`, `list channel` or `list all`. For one "
                             "link with a note that starts with “list”, put the count first: "
                             f"`/onboard-link 1 {_quote(text)}`.")
        return ListRequest(scope)
    if first.lower() == "forget":
        token = parse_token_argument(text[len(first):])
        if token is None:
            raise UsageError("Say which link to forget: `/onboard-link forget <link or token>`. "
                             "For one link with a note that starts with “forget”, put the "
                             f"count first: `/onboard-link 1 {_quote(text)}`.")
        return ForgetRequest(token)
    count = 1
    if _NUMBERISH.fullmatch(first):
        if not first.isdigit() or not 1 <= int(first) <= MAX_LINKS:
            raise UsageError(
                f"The number of links must be a whole number from 1 to {MAX_LINKS}; "
                f"“{first[:20]}” is not."
            )
        count, text = int(first), text[len(first):].strip()
    return OnboardRequest(count=count, note=note_of(text))


def _report(days: str, most: int) -> ReportRequest:
    """`report [days]`: 1 to `most` days (the history's retention), the last week if none."""
    if not days:
        return ReportRequest(min(REPORT_DAYS, most))
    if not days.isdigit() or not 1 <= int(days) <= most:
        raise UsageError(f"A report covers 1 to {most} days: `/onboard-link report [days]` "
                         f"(default {min(REPORT_DAYS, most)}); “{days[:20]}” is not a whole "
                         f"number from 1 to {most}.")
    return ReportRequest(int(days))


def _quote(text: str) -> str:
    """The user's text, short and with no backticks, for a code span in a reply."""
    text = " ".join(text.replace("`", "'").split())
    return text if len(text) <= 40 else text[:39] + "…"


def parse_check(raw: str | None) -> CheckRequest | Help:
    text = _text(raw)
    if not text or text.lower() in HELP_WORDS:
        return Help()
    token = parse_token_argument(text)
    if token is None:
        raise UsageError(
            "That doesn't look like an onboarding token or link. Paste the whole link "
            "(https://messaging.exotel.com/ua-links/isv-onboard/…) or just the token at its end: "
            f"{TOKEN_RULE}, like 3f1c2a9e-5b7d-4e0f-9a21-7c6d5e4b3a10."
        )
    return CheckRequest(token=token)


# Buttons that issue again for a customer ("Issue a new one anyway", the digest's Renew) carry
# the request as their value: JSON, so that a reference with spaces or a note with a `ref:`
# word comes back as it went. Slack keeps a button's value to 2000 characters.
MAX_BUTTON_VALUE = 2000
_AGAIN_FIELDS = {"count", "note", "ref"}
UNREADABLE_BUTTON = "That button carries no request the bot can read."


def again_value(count: int, note: str, customer_ref: str = "") -> str:
    """The value of a button that issues `count` links for the customer again; ValueError
    if it would not fit a button (a note of control characters, each escaped six-fold)."""
    value = json.dumps({"count": count, "note": note, "ref": customer_ref},
                       ensure_ascii=False, separators=(",", ":"))
    if len(value) > MAX_BUTTON_VALUE:
        raise ValueError(f"{len(value)} characters is over a button value's "
                         f"{MAX_BUTTON_VALUE}")
    return value


def parse_again(value: object) -> OnboardRequest:
    """The request an `again_value` button carries, checked as the command's would be (the
    value comes back from Slack: anyone can send anything); UsageError for anything else.
    Buttons posted before the JSON value carry the command's text, read as the command."""
    if not isinstance(value, str) or not value or len(value) > MAX_BUTTON_VALUE:
        raise UsageError(UNREADABLE_BUTTON)
    if not value.startswith("{"):
        request = parse_onboard(value)
        if not isinstance(request, OnboardRequest):
            raise UsageError(UNREADABLE_BUTTON)
        return request
    try:
        data = json.loads(value)
    except ValueError:
        raise UsageError(UNREADABLE_BUTTON) from None
    if not (isinstance(data, dict) and set(data) == _AGAIN_FIELDS
            and type(data["count"]) is int  # not a bool, a float or digits
            and isinstance(data["note"], str) and isinstance(data["ref"], str)):
        raise UsageError(UNREADABLE_BUTTON)
    return OnboardRequest(count=count_of(data["count"]), note=note_of(data["note"]),
                          customer_ref=ref_of(data["ref"]))
