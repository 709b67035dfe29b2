"""Block Kit primitives every renderer uses, within Slack's limits, and user text made safe.

User text never reaches mrkdwn unescaped: it goes in plain_text objects (`note_block`,
`customer_blocks`), or through `escape` / `escape_note` where it must sit inside mrkdwn (a
CRM reference too: `ref_mrkdwn`). Customer notes and references have bidi controls stripped
wherever they are shown (notes stored before they were stripped on input).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache, wraps
from typing import Any, Literal, Required, TypedDict

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.domain.store import now
from bot.slack.inputs import strip_bidi


class Message(TypedDict, total=False):
    """A message as the bot hands it to Slack: an ack, a reply to a response URL, a post or
    a DM. The keys are Slack's own names, so a Message is passed on with `**message`.

    Only `text` is always there (Slack's fallback for notifications and screen readers).
    """

    text: Required[str]
    blocks: list[dict[str, Any]]  # Block Kit, rendered and checked against Slack's limits
    response_type: Literal["ephemeral", "in_channel"]  # acks and replies: who sees them
    unfurl_links: bool  # posts: False shows no preview of the links in `text`


class Response(Message, total=False):
    """A reply to a response URL, which may also say what becomes of the message whose
    button was clicked (acks cannot: Bolt's `ack` takes no `replace_original`)."""

    replace_original: bool  # False: the reply comes beside the clicked message


MAX_BLOCKS = 50
SECTION_LIMIT = 3000

def escape(text: str) -> str:
    """Make user text inert in mrkdwn: no mentions, links or channel pings."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# mrkdwn has no escape for its formatting characters: in a note they become lookalikes that
# format nothing (∗ ˍ ∼ ˋ), so a note cannot bold, italicise, strike or open code in a line.
_INERT = str.maketrans({"*": "\u2217", "_": "\u02cd", "~": "\u223c", "`": "\u02cb"})


def escape_note(note: str) -> str:
    """A customer note made inert for mrkdwn: `escape`, formatting characters neutralised
    and bidi controls dropped (notes stored before they were stripped on input)."""
    return escape(strip_bidi(note).translate(_INERT))


def slack_date(moment: datetime) -> str:
    """A date each reader sees in their own time zone, with a UTC fallback."""
    fallback = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def time_left(until: datetime, at: datetime | None = None) -> str:
    seconds = int((until - (at or now())).total_seconds())
    if seconds <= 0:
        return "expired"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes} min left" if hours else f"{max(minutes, 1)} min left"


def duration(span: timedelta) -> str:
    """A span in whole minutes, hours beyond the hour: "5 min", "2 h 10 min"."""
    minutes = round(span.total_seconds() / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{max(minutes, 1)} min"


def outcome_counts(issued: int, used: int, expired: int, median_to_used: timedelta | None) -> str:
    """What came of links, as App Home's funnel and the report say it: "3 issued, 1 turned
    USED, 2 expired unused; median time to USED 2 h 0 min"."""
    median = (f"; median time to USED {duration(median_to_used)}"
              if median_to_used is not None else "")
    return f"{issued} issued, {used} turned USED, {expired} expired unused{median}"


def render(blocks: Iterable[Block]) -> list[dict[str, Any]]:
    rendered = [block.to_dict() for block in blocks]  # to_dict() checks Block Kit's limits
    if len(rendered) > MAX_BLOCKS:
        raise ValueError(f"{len(rendered)} blocks is over Slack's {MAX_BLOCKS}")
    return rendered


def ephemeral(text: str, blocks: Iterable[Block]) -> Message:
    """A reply only the requester sees (an ack, or a post to the response URL)."""
    return {"response_type": "ephemeral", "text": text, "blocks": render(blocks)}


def section(mrkdwn: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=mrkdwn))


def context(*mrkdwn: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=t) for t in mrkdwn])


def note_block(note: str) -> ContextBlock:
    return ContextBlock(elements=[PlainTextObject(text=f"Customer note: {strip_bidi(note)}",
                                                  emoji=False)])


def customer_blocks(note: str, customer_ref: str = "") -> list[Block]:
    """Who links are for, in plain text (exactly as typed, and nothing in it can format or
    mention): the customer note and the CRM reference in one context block; none without
    either."""
    elements = [PlainTextObject(text=f"{label}: {strip_bidi(value)}", emoji=False)
                for label, value in (("Customer note", note), ("CRM reference", customer_ref))
                if value]
    return [ContextBlock(elements=elements)] if elements else []


def ref_mrkdwn(customer_ref: str) -> str:
    """A CRM reference inside mrkdwn, made inert as a note is (`escape_note`)."""
    return f"CRM ref {escape_note(customer_ref)}"


def chunks(lines: Iterable[str], limit: int = SECTION_LIMIT) -> Iterator[str]:
    """Join lines into texts of at most `limit` characters each."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) + 1 > limit:
            yield "\n".join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        yield "\n".join(chunk)


def fixed(build: Callable[..., Message]) -> Callable[..., Message]:
    """Build a fixed reply once: acks are on Slack's clock, and Block Kit checks take time."""
    cached = cache(build)

    @wraps(build)
    def fresh_copy(*args: Any) -> Message:
        return {**cached(*args)}  # callers may add keys; the cached one stays as it was

    return fresh_copy


def keeping_original(message: Message) -> Response:
    """A reply to a button that leaves the message with the button as it was."""
    return {**message, "replace_original": False}


def as_post(message: Message) -> Message:
    """A reply turned into a post or DM: only the keys chat.postMessage knows."""
    post: Message = {"text": message["text"]}
    if "blocks" in message:
        post["blocks"] = message["blocks"]
    if "unfurl_links" in message:
        post["unfurl_links"] = message["unfurl_links"]
    return post


def text_message(text: str) -> Message:
    """A short ephemeral reply; `text` is mrkdwn the bot wrote (escape user parts first)."""
    return ephemeral(text, [section(text)])
