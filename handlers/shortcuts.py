"""The form (global shortcut `new_onboarding_links`, the App Home's "New links" button and
the modal they open) and the message shortcut `send_onboarding_link`."""

from __future__ import annotations

from logging import Logger
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk.errors import SlackApiError

from bot.engine.queue import new_batch_id
from bot.engine.registry import Job
from bot.slack import messages, surfaces
from bot.slack.blocks import text_message
from bot.slack.core import Core
from bot.slack.inputs import (
    CHANNEL_ID,
    MESSAGE_TS,
    USER_ID,
    UsageError,
    count_of,
    matches,
    note_of,
    ref_of,
    requester_from,
)
from handlers.enqueue import enqueue_or_tell, enqueue_then_ack
from handlers.refusal import refusal

FORM_UNAVAILABLE = "count"  # the field that shows a problem that is no field's fault


def open_form(core: Core, body: dict[str, Any], logger: Logger) -> None:
    """The form, or why not, in a modal: views.open must happen within the trigger's 3 s,
    before the ack (delivery opens it with its short look-up client)."""
    requester = requester_from(body, channel="")
    decision = core.access.may_open_form(requester.user_id)
    if decision.allowed:
        view = surfaces.form_view()
    else:
        core.onboarding.refused(requester, "form", decision.reason)
        view = surfaces.refused_view(decision.reason, core.access.admins)
    try:
        core.delivery.open_view(str(body.get("trigger_id", "")), view)
    except (SlackApiError, OSError) as error:
        logger.warning("could not open the form for %s: %s", requester.user_id, error)


def form_shortcut(ack: Ack, body: dict[str, Any], context: BoltContext, logger: Logger) -> None:
    open_form(context["core"], body, logger)
    ack()


def form_button(ack: Ack, body: dict[str, Any], context: BoltContext, logger: Logger) -> None:
    open_form(context["core"], body, logger)
    ack()


def form_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any],
                   context: BoltContext) -> None:
    core: Core = context["core"]
    fields = _fields(view)
    errors: dict[str, str] = {}
    count = note = customer_ref = None
    try:
        count = count_of(fields[surfaces.COUNT].get("value") or "0")
    except UsageError as problem:
        errors[surfaces.COUNT] = str(problem)
    try:
        note = note_of(fields[surfaces.NOTE].get("value"))
    except UsageError as problem:
        errors[surfaces.NOTE] = str(problem)
    try:
        customer_ref = ref_of(fields[surfaces.REF].get("value"))
    except UsageError as problem:
        errors[surfaces.REF] = str(problem)
    chosen = fields[surfaces.CHANNEL].get("selected_conversation")
    channel = matches(CHANNEL_ID, chosen)
    if chosen and channel is None:
        errors[surfaces.CHANNEL] = "Choose a channel from the list."
    if errors or count is None or note is None or customer_ref is None:
        ack(response_action="errors", errors=errors)
        return
    requester = requester_from(body, channel=channel or "")
    decision = core.access.may_issue(requester.user_id, requester.channel_id)
    if not decision.allowed:
        core.onboarding.refused(requester, "form", decision.reason)
        field = surfaces.CHANNEL if core.access.restricts_channels else FORM_UNAVAILABLE
        ack(response_action="errors", errors={field: decision.reason})
        return
    enqueue_or_tell(
        core, Job.ISSUE_FROM_FORM, None, requester, count, note, new_batch_id(),
        channel, idempotent=False, then=ack,
        tell=lambda problem: ack(response_action="errors",
                                 errors={FORM_UNAVAILABLE: problem["text"]}),
        job_kwargs={"customer_ref": customer_ref})


def send_in_thread(ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
    core: Core = context["core"]
    requester = requester_from(body)
    channel = requester.channel_id
    url = body.get("response_url")
    decision = core.access.may_issue(requester.user_id, requester.channel_id)
    if not decision.allowed:
        enqueue_then_ack(core, ack, Job.RESPOND, url,
                         refusal(core, requester, "send_in_thread", decision.reason),
                         button=True)
        return
    message = body.get("message") or {}
    thread_ts = (matches(MESSAGE_TS, message.get("thread_ts"))
                 or matches(MESSAGE_TS, message.get("ts")))
    if thread_ts is None or not channel:
        enqueue_then_ack(core, ack, Job.RESPOND, url, text_message(
            ":warning: The bot can't tell which message this is; try the shortcut again."),
            button=True)
        return
    enqueue_then_ack(core, ack, Job.SEND_IN_THREAD, url, requester, _author(message),
                     thread_ts, new_batch_id(), idempotent=False, button=True)


def _fields(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The submitted form's inputs, by block (each block holds one element of its name)."""
    values = (view.get("state") or {}).get("values") or {}
    return {block: ((values.get(block) or {}).get(block) or {})
            for block in (surfaces.COUNT, surfaces.NOTE, surfaces.REF, surfaces.CHANNEL)}


def _author(message: dict[str, Any]) -> str:
    """The message author's user id, or for a bot or app the name Slack shows for it."""
    user = matches(USER_ID, message.get("user"))
    if user:
        return user
    name = (message.get("bot_profile") or {}).get("name") or message.get("username")
    return " ".join(str(name).split())[:80] if name else "unknown author"


def register(app: App) -> None:
    app.shortcut(surfaces.FORM)(form_shortcut)
    app.action(messages.NEW_LINKS_ACTION)(form_button)
    app.view(surfaces.FORM)(form_submitted)
    app.shortcut(surfaces.SEND_IN_THREAD)(send_in_thread)
