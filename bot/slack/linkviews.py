"""Messages about links and what became of them: listings with each link and its status, the
App Home with the funnel, the "a customer finished" DM, and the repeat-issue answer.

Kept within Slack's limits: at most MAX_LINK_LINES links in one message (the rest counted),
each batch in one section of under 3000 characters.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, SectionBlock
from slack_sdk.models.blocks.basic_components import MarkdownTextObject

from bot.domain.history import Funnel
from bot.domain.models import Batch, Listing, TrackedLink
from bot.domain.status import LinkStatus
from bot.domain.store import now
from bot.exotel.tokens import mask
from bot.slack.blocks import (
    SECTION_LIMIT,
    Message,
    context,
    customer_blocks,
    ephemeral,
    escape,
    escape_note,
    outcome_counts,
    ref_mrkdwn,
    render,
    section,
    slack_date,
    time_left,
)
from bot.slack.command_text import again_value
from bot.slack.messages import FORGET_ACTION, MAX_LISTED, NEW_LINKS_ACTION, RULES, batch_line

ISSUE_ANYWAY_ACTION = "issue_anyway"
# Links shown in one listing: 30 lines of ~180 characters, with 20 batch lines, stay well
# inside Slack's ~13k characters of blocks.
MAX_LINK_LINES = 30
HOME_MAX_BLOCKS = 100
MAX_CHARS = 10_000  # of batch blocks (JSON) in one message: Slack refuses ~13k in all
STATUS_WORDS = {
    "VALID": ":large_green_circle: VALID",
    "USED": ":white_check_mark: USED (a customer finished onboarding)",
    "EXPIRED": ":red_circle: EXPIRED",
}
Details = dict[str, list[tuple[TrackedLink, LinkStatus | None]]]


def ago(moment: datetime, at: datetime | None = None) -> str:
    seconds = max(0, int(((at or now()) - moment).total_seconds()))
    if seconds < 60:
        return "just now"
    minutes = seconds // 60
    return f"{minutes} min ago" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min ago"


def status_text(record: LinkStatus | None, at: datetime | None = None) -> str:
    if record is None:
        return "status not checked yet"
    word = STATUS_WORDS.get(record.status, escape(record.status))
    return f"{word} (checked {ago(record.checked_at, at)})"


def link_line(link: TrackedLink, record: LinkStatus | None, full: bool,
              at: datetime | None = None) -> str:
    shown = escape(link.url) if full else f"`{mask(link.token)}`"
    return f"• {shown}: {status_text(record, at)}"


def _batch_section(batch: Batch, rows: list[tuple[TrackedLink, LinkStatus | None]],
                   full: bool, budget: int, at: datetime) -> tuple[str, int]:
    """The batch's line and as many of its links as fit; the links it showed."""
    text = batch_line(batch, at)
    shown = 0
    for link, record in rows:
        line = link_line(link, record, full, at)
        if shown >= budget or len(text) + len(line) + 80 > SECTION_LIMIT:
            break
        text += "\n" + line
        shown += 1
    if shown < len(rows):
        text += f"\n…and {len(rows) - shown} more link{'s' if len(rows) - shown != 1 else ''}"
    return text, shown


def _batch_blocks(listing: Listing, details: Details, full_for: str | None,
                  forget_button: bool) -> list[Block]:
    """One section per batch; full links only for `full_for`'s own batches."""
    at = now()
    budget, size = MAX_LINK_LINES, 0
    blocks: list[Block] = []
    for batch in listing.batches[:MAX_LISTED]:
        full = full_for is not None and batch.requester.user_id == full_for
        text, shown = _batch_section(batch, details.get(batch.batch_id, []), full, budget, at)
        accessory = (ButtonElement(text="Forget", action_id=FORGET_ACTION, value=batch.batch_id)
                     if forget_button else None)
        block = SectionBlock(text=MarkdownTextObject(text=text), accessory=accessory)
        size += len(json.dumps(block.to_dict()))
        if size > MAX_CHARS:
            break
        budget -= shown
        blocks.append(block)
    hidden = listing.total - len(blocks)
    if hidden > 0:
        blocks.append(context(f"…and {hidden} older ones."))
    return blocks


def listing(listing: Listing, details: Details, scope: str, viewer: str) -> Message:
    """`/onboard-link list [channel|all]`: the viewer's own links in full, others' masked."""
    title = {"user": "Your live onboarding links", "channel": "Live onboarding links in this "
             "channel", "all": "Everyone's live onboarding links"}[scope]
    if not listing.batches:
        return ephemeral(title, [section(f"*{title}*: none. Create some with `/onboard-link`.")])
    blocks: list[Block] = [section(f"*{title}* (newest first; only you see this)")]
    blocks.extend(_batch_blocks(listing, details, viewer, forget_button=True))
    return ephemeral(title, blocks)


def _funnel_line(funnel: Funnel, whose: str) -> str:
    counts = outcome_counts(funnel.issued, funnel.used, funnel.expired, funnel.median_to_used)
    return f"*{whose}, last {funnel.days} days*: {counts}."


def home(listing: Listing, details: Details, viewer: str, funnel: Funnel,
         team: Funnel | None) -> dict[str, Any]:
    """The App Home tab: the viewer's live links in full with their status, and the funnel."""
    lines = [_funnel_line(funnel, "Your links")]
    if team is not None:
        lines.append(_funnel_line(team, "The whole team"))
    blocks: list[Block] = [
        section("\n".join(lines)),
        section("*Your live onboarding links*"),
        ActionsBlock(elements=[ButtonElement(text="New links", style="primary",
                                             action_id=NEW_LINKS_ACTION)]),
    ]
    blocks.extend(_batch_blocks(listing, details, viewer, forget_button=False))
    if not listing.batches:
        blocks.append(context("None right now. Create some with `/onboard-link` in any "
                               "channel."))
    blocks.append(context(RULES))
    rendered = [block.to_dict() for block in blocks]
    if len(rendered) > HOME_MAX_BLOCKS:
        raise ValueError(f"{len(rendered)} blocks is over Slack's {HOME_MAX_BLOCKS}")
    return {"type": "home", "blocks": rendered}


def link_used(batch: Batch, used: TrackedLink, links: list[TrackedLink],
              statuses: dict[str, LinkStatus]) -> Message:
    """The DM when a link turns USED: which customer, which link, and the rest of the batch."""
    note = escape_note(batch.note) if batch.note else "a customer with no note"
    ref = f" ({ref_mrkdwn(batch.customer_ref)})" if batch.customer_ref else ""
    blocks: list[Block] = [section(
        f":tada: A customer finished onboarding with your link `{mask(used.token)}` "
        f"for *{note}*{ref}.")]
    others = [link for link in links if link.token != used.token]
    if others:
        at = now()
        lines = [link_line(link, statuses.get(link.token), False, at)
                 for link in others[:MAX_LINK_LINES]]
        if len(others) > MAX_LINK_LINES:
            lines.append(f"…and {len(others) - MAX_LINK_LINES} more")
        blocks.append(section(f"The batch's other links ({time_left(batch.expires_at, at)}):\n"
                               + "\n".join(lines)))
    blocks.append(context("Exotel marks a link USED once it has onboarded; this bot polls "
                           "live links in the background. `/onboard-link list` shows them all."))
    return {"text": f"A customer finished onboarding: {escape_note(batch.note[:100])}",
            "blocks": render(blocks)}


def already_issued(batch: Batch, rows: list[tuple[TrackedLink, LinkStatus | None]],
                   count: int, note: str, customer_ref: str = "") -> Message:
    """The answer to issuing again for a customer who has a live link: that link. Issuing
    anyway asks for `note` again, with the CRM reference asked for, else the batch's (the
    same customer's), in the button's value (`command_text.again_value`; no button for a
    note too long to fit one, which only control characters make)."""
    at = now()
    noun = "link" if len(rows) == 1 else "links"
    lines = [link_line(link, record, True, at) for link, record in rows[:MAX_LINK_LINES]]
    blocks: list[Block] = [
        section(f":information_source: You already have {len(rows)} live {noun} for this "
                 f"customer, issued {slack_date(batch.issued_at)} "
                 f"({time_left(batch.expires_at, at)}). Nothing new was issued."),
        *customer_blocks(batch.note, batch.customer_ref),
        section("\n".join(lines)),
        context(RULES),
    ]
    try:
        again = again_value(count, note, customer_ref or batch.customer_ref)
    except ValueError:
        again = None
    if again is not None:
        blocks.append(ActionsBlock(elements=[ButtonElement(
            text="Issue a new one anyway" if count == 1 else f"Issue {count} new ones anyway",
            action_id=ISSUE_ANYWAY_ACTION, value=again)]))
    return ephemeral(f"You already have a live link for {escape_note(note[:100])}", blocks)


def already_stopped() -> Message:
    return ephemeral("Already stopped", [section(
        ":no_bell: Reminders for those links were already stopped.")])


def already_forgotten() -> Message:
    return ephemeral("Already forgotten", [section(
        ":wastebasket: The bot had already forgotten those links; nothing more to do.")])


def already_posted() -> Message:
    return ephemeral("Already posted", [section(
        ":white_check_mark: Those links were already posted to the channel.")])
