"""Block Kit for the Slack surfaces beyond the commands: the form (modal), links posted in
a thread, link previews and the Workflow Builder step's errors.

Built from bot.slack.blocks like every message: user text in plain_text or escaped, limits
checked by slack_sdk's models."""

from __future__ import annotations

import re
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ConversationFilter,
    ConversationSelectElement,
    InputBlock,
    NumberInputElement,
    PlainTextInputElement,
)
from slack_sdk.models.views import View

from bot.domain.models import Requester
from bot.domain.onboarding import IssueResult
from bot.domain.previews import Preview
from bot.domain.store import now
from bot.slack import messages
from bot.slack.blocks import (
    MAX_BLOCKS,
    Message,
    Response,
    as_post,
    context,
    customer_blocks,
    escape,
    note_block,
    render,
    section,
    slack_date,
    time_left,
)
from bot.slack.inputs import MAX_LINKS, MAX_NOTE, MAX_REF

# Callback and block ids are part of the interface (workflows, saved shortcuts): keep them.
FORM = "new_onboarding_links"  # the global shortcut and the modal (and messages.NEW_LINKS_ACTION)
SEND_IN_THREAD = "send_onboarding_link"  # the message shortcut
WORKFLOW_STEP = "create_onboarding_links"  # the Workflow Builder step (manifest functions)
COUNT, NOTE, REF, CHANNEL = "count", "customer_note", "customer_ref", "channel"
_EMOJI = re.compile(r":[a-z0-9_+-]+: ?")
PREVIEW_STATUS = {
    "VALID": ":large_green_circle: *VALID*: can still be used",
    "USED": ":white_check_mark: *USED*: has onboarded as many customers as it may",
    "EXPIRED": ":red_circle: *EXPIRED*: past its 24 hours",
}


def form_view() -> dict[str, Any]:
    """The modal of the global shortcut and the App Home's "New links" button."""
    return View(
        type="modal", callback_id=FORM, title="New onboarding links", submit="Create",
        close="Cancel",
        blocks=[
            InputBlock(block_id=COUNT, label="Number of links",
                       element=NumberInputElement(action_id=COUNT, is_decimal_allowed=False,
                                                  initial_value="1", min_value="1",
                                                  max_value=str(MAX_LINKS)),
                       hint=f"1 to {MAX_LINKS}. Each link works for 24 hours and onboards up "
                            "to five customers."),
            InputBlock(block_id=NOTE, label="Customer note", optional=True,
                       element=PlainTextInputElement(action_id=NOTE, max_length=MAX_NOTE,
                                                     placeholder="ACME Corp, Priya's team")),
            InputBlock(block_id=REF, label="CRM reference", optional=True,
                       element=PlainTextInputElement(action_id=REF, max_length=MAX_REF,
                                                     placeholder="hubspot-12345"),
                       hint="The customer's record id in your CRM, or their email."),
            InputBlock(block_id=CHANNEL, label="Also post them in", optional=True,
                       element=ConversationSelectElement(
                           action_id=CHANNEL, placeholder="A channel (optional)",
                           filter=ConversationFilter(include=["public", "private"])),
                       hint="The links always come to you as a direct message."),
        ],
    ).to_dict()


def refused_view(reason: str, admins: list[str]) -> dict[str, Any]:
    """What the shortcut opens for someone the access policy turns away."""
    text = messages.refused(reason, admins)["text"]
    return View(type="modal", callback_id=FORM, title="New onboarding links", close="Close",
                blocks=[section(text)]).to_dict()


def links_dm(result: IssueResult) -> Message:
    """The form's links, as a direct message to the requester (not an ephemeral reply)."""
    return as_post(messages.issued(result))


def thread_link(result: IssueResult, rep: Requester) -> Message:
    """One link posted in a message's thread, attributed to the rep who asked for it."""
    link = result.links[0]
    blocks: list[Block] = [section(f":link: <@{rep.user_id}> sent a WhatsApp onboarding "
                                    f"link:\n{link.url}")]
    blocks.extend(customer_blocks(result.note, result.customer_ref))
    blocks.append(context(f"Valid until {slack_date(link.expires_at)}. "
                           f"{messages.RULES}"))
    return {"text": f"WhatsApp onboarding link: {link.url}", "blocks": render(blocks),
            "unfurl_links": False}


def not_posted_in_thread(result: IssueResult, error: str) -> Response:
    """For the rep alone: the thread refused the post; here is the link to pass on."""
    message = messages.issued(result)
    why = messages.cannot_post_here(error)["blocks"]
    return {**message, "blocks": [*why, *message["blocks"]][:MAX_BLOCKS],
            "replace_original": False}


def posted_in_channel(channel: str) -> Message:
    return {"text": f"Posted the links in <#{channel}>."}


def not_posted_in_channel(channel: str, error: str) -> Message:
    text = messages.cannot_post_here(error)["text"].replace("this channel", f"<#{channel}>")
    return {"text": text}


def preview(found: Preview) -> dict[str, Any]:
    """A link's unfurl: Exotel's status, time left and, when tracked, who and for whom."""
    status = ("status unknown right now (ask with `/check-token`)" if found.status is None
              else PREVIEW_STATUS.get(found.status, f"*{escape(found.status)}*"))
    blocks: list[Block] = [section(f"*WhatsApp onboarding link* `{'…' + found.token[-4:]}`: "
                                    f"{status}")]
    tracked = found.tracked
    if tracked is not None:
        blocks.append(context(
            f"Issued by <@{tracked.requester.user_id}> {slack_date(tracked.issued_at)}; "
            f"{time_left(tracked.expires_at, now())}."))
        if tracked.note:
            blocks.append(note_block(tracked.note))
    return {"blocks": render(blocks)}


def step_error(text: str) -> str:
    """A workflow step's error, as Workflow Builder shows it: plain words, no markup."""
    text = _EMOJI.sub("", text).replace("*", "").replace("`", "")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


def step_refused(reason: str) -> str:
    return step_error(f"Onboard Bot refused: {reason} The workflow's user needs access to "
                      "issue onboarding links; ask the bot's admins.")
