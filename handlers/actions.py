"""Buttons: Renew, Stop reminding, Post to channel, Forget; Issue a new one anyway and the
digest's Renew (a customer's request, in the button's value).

Every click is checked before anything touches Redis: the value must be a batch id the bot
made, and the clicker must be allowed to issue. Whose batch it is (its requester or an
admin) is checked by the job, which reads the batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltContext

from bot.domain.access import valid_batch_id
from bot.domain.models import Requester
from bot.domain.store import StoreUnavailable
from bot.engine.queue import new_batch_id
from bot.engine.registry import Job
from bot.slack import linkviews, messages
from bot.slack.blocks import Message, keeping_original, text_message
from bot.slack.command_text import OnboardRequest, parse_again
from bot.slack.core import Core
from bot.slack.inputs import UsageError, requester_from
from bot.slack.messages import (
    FORGET_ACTION,
    RENEW_ACTION,
    RENEW_CUSTOMER_ACTION,
    SHARE_ACTION,
    STOP_ACTION,
)
from handlers.enqueue import enqueue_then_ack
from handlers.refusal import refusal


def allowed_click(core: Core, ack: Ack, body: dict[str, Any], action: dict[str, Any],
                  name: str) -> tuple[Requester, str] | None:
    """The clicker and the batch id, or None once the click was refused (and audited)."""
    clicker = requester_from(body)
    value = action.get("value")
    decision = core.access.may_click(clicker.user_id, clicker.channel_id, value)
    if decision.allowed:
        return clicker, str(value)
    message = (refusal(core, clicker, name, decision.reason) if valid_batch_id(value)
               else _not_a_batch(core, clicker, name, decision.reason))
    enqueue_then_ack(core, ack, Job.RESPOND, body.get("response_url"), message, button=True)
    return None


def _not_a_batch(core: Core, clicker: Requester, name: str, reason: str) -> Message:
    # The value itself is neither stored nor echoed: it is whatever the sender made up.
    core.onboarding.refused(clicker, name, "invalid button value")
    return text_message(f":no_entry: {reason}")


# The buttons that act on one batch differ only in this: action id -> (name in the audit,
# the job, the job's arguments after the clicker, whether a repeat of the job is harmless).
BatchArgs = Callable[[str], tuple[Any, ...]]
BATCH_BUTTONS: dict[str, tuple[str, Job, BatchArgs, bool]] = {
    RENEW_ACTION: ("renew", Job.RENEW_BATCH, lambda b: (b, new_batch_id()), False),
    STOP_ACTION: ("stop_reminders", Job.STOP_REMINDERS, lambda b: (b,), True),
    SHARE_ACTION: ("share", Job.SHARE_BATCH, lambda b: (b,), True),
    FORGET_ACTION: ("forget", Job.FORGET, lambda b: (None, b), True),
}


def batch_button(ack: Ack, body: dict[str, Any], action: dict[str, Any],
                 context: BoltContext) -> None:
    """Renew, Stop reminding, Post to channel and Forget: checked, then their job."""
    core: Core = context["core"]
    name, job, job_args, idempotent = BATCH_BUTTONS[action["action_id"]]
    if (allowed := allowed_click(core, ack, body, action, name)) is None:
        return
    clicker, batch_id = allowed
    enqueue_then_ack(core, ack, job, body.get("response_url"), clicker, *job_args(batch_id),
                     idempotent=idempotent, button=True)


def issue_anyway(ack: Ack, body: dict[str, Any], action: dict[str, Any],
                 context: BoltContext) -> None:
    """"Issue a new one anyway": the repeat-issue answer's count, note and CRM reference
    (`command_text.parse_again`: the value comes back from Slack, so it is checked again),
    issued even though the customer has a live link."""
    core: Core = context["core"]
    if (allowed := _again_request(core, ack, body, action)) is None:
        return
    clicker, request = allowed
    enqueue_then_ack(core, ack, Job.ISSUE_LINKS, body.get("response_url"), clicker,
                     request.count, request.note, new_batch_id(), False, True,
                     idempotent=False, button=True,
                     job_kwargs={"customer_ref": request.customer_ref})


def renew_customer(ack: Ack, body: dict[str, Any], action: dict[str, Any],
                   context: BoltContext) -> None:
    """The digest's Renew: one new link for the customer its value names, for whoever
    clicks, as `/onboard-link 1 <note> ref:<ref>` would issue it (the customer's live link,
    if the clicker has one, instead). Every answer comes beside the digest, which stays."""
    core: Core = context["core"]
    if (allowed := _again_request(core, ack, body, action)) is None:
        return
    clicker, request = allowed
    url = body.get("response_url")
    try:
        existing = core.onboarding.existing(clicker, request.count, request.note,
                                            request.customer_ref)
    except StoreUnavailable as error:
        ack()
        core.delivery.reply(url, keeping_original(messages.problem(error)))
        return
    if existing is not None:
        enqueue_then_ack(core, ack, Job.RESPOND, url, linkviews.already_issued(
            *existing, request.count, request.note, request.customer_ref), button=True)
        return
    enqueue_then_ack(core, ack, Job.ISSUE_LINKS, url, clicker, request.count, request.note,
                     new_batch_id(), False, True, idempotent=False, button=True,
                     keep_original=True, job_kwargs={"customer_ref": request.customer_ref})


def _again_request(core: Core, ack: Ack, body: dict[str, Any],
                   action: dict[str, Any]) -> tuple[Requester, OnboardRequest] | None:
    """The clicker and the request an issue-again button carries, or None once the click
    was answered: a value that is no such request (read before anything touches Redis),
    or a clicker who may not issue (refused and audited)."""
    clicker = requester_from(body)
    url = body.get("response_url")
    try:
        request = parse_again(action.get("value"))
    except UsageError:
        # The value itself is neither stored nor echoed: it is whatever the sender made up.
        core.onboarding.refused(clicker, "issue", "invalid button value")
        enqueue_then_ack(core, ack, Job.RESPOND, url, messages.unreadable_request(), button=True)
        return None
    decision = core.access.may_issue(clicker.user_id, clicker.channel_id)
    if not decision.allowed:
        enqueue_then_ack(core, ack, Job.RESPOND, url,
                         refusal(core, clicker, "issue", decision.reason), button=True)
        return None
    return clicker, request


def register(app: App) -> None:
    for action_id in BATCH_BUTTONS:
        app.action(action_id)(batch_button)
    app.action(linkviews.ISSUE_ANYWAY_ACTION)(issue_anyway)
    app.action(RENEW_CUSTOMER_ACTION)(renew_customer)
