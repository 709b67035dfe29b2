"""The form (global shortcut `new_onboarding_links`, the App Home's "New links" button and
the modal they open) and the message shortcut `send_onboarding_link`."""

from __future__ import annotations

from logging import Logger
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App, Respond
from slack_sdk.errors import SlackApiError

from bot.domain.access import Decision
from bot.domain.models import Requester
from bot.runtime import jobs
from bot.slack import messages, surfaces
from bot.slack.command_text import UsageError
from bot.slack.core import Core, lookup_client
from bot.slack.inputs import CHANNEL_ID, MESSAGE_TS, TEAM_ID, USER_ID, count_of, matches, note_of
from handlers.enqueue import enqueue_or_tell, enqueue_then_ack
from handlers.refusal import refusal

if TYPE_CHECKING:
    from bot.slack.services import Services

FORM_UNAVAILABLE = "count"  # the field that shows a problem that is no field's fault


def register(app: App, services: Services) -> None:
    core = services.core
    # views.open must happen within the trigger's 3 s, before the ack: short and no retries.
    opener = lookup_client(core.settings)

    def open_form(body: dict[str, Any], logger: Logger) -> None:
        requester = _who(body, channel="")
        decision = _may_use_form(core, requester.user_id)
        if decision.allowed:
            view = surfaces.form_view()
        else:
            core.onboarding.refused(requester, "form", decision.reason)
            view = surfaces.refused_view(decision.reason, core.access.admins)
        try:
            opener.views_open(trigger_id=str(body.get("trigger_id", "")), view=view)
        except (SlackApiError, OSError) as error:
            logger.warning("could not open the form for %s: %s", requester.user_id, error)

    @app.shortcut(surfaces.FORM)
    def form_shortcut(ack: Ack, body: dict[str, Any], logger: Logger) -> None:
        open_form(body, logger)
        ack()

    @app.action(messages.NEW_LINKS_ACTION)
    def form_button(ack: Ack, body: dict[str, Any], logger: Logger) -> None:
        open_form(body, logger)
        ack()

    @app.view(surfaces.FORM)
    def form_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any],
                       logger: Logger) -> None:
        values = (view.get("state") or {}).get("values") or {}
        fields = {block: ((values.get(block) or {}).get(block) or {})
                  for block in (surfaces.COUNT, surfaces.NOTE, surfaces.CHANNEL)}
        errors: dict[str, str] = {}
        count = note = None
        try:
            count = count_of(fields[surfaces.COUNT].get("value") or "0")
        except UsageError as problem:
            errors[surfaces.COUNT] = str(problem)
        try:
            note = note_of(fields[surfaces.NOTE].get("value"))
        except UsageError as problem:
            errors[surfaces.NOTE] = str(problem)
        chosen = fields[surfaces.CHANNEL].get("selected_conversation")
        channel = matches(CHANNEL_ID, chosen)
        if chosen and channel is None:
            errors[surfaces.CHANNEL] = "Choose a channel from the list."
        if errors or count is None or note is None:
            ack(response_action="errors", errors=errors)
            return
        requester = _who(body, channel=channel or "")
        decision = core.access.may_issue(requester.user_id, requester.channel_id)
        if not decision.allowed:
            core.onboarding.refused(requester, "form", decision.reason)
            field = surfaces.CHANNEL if core.settings.allowed_channel_ids else FORM_UNAVAILABLE
            ack(response_action="errors", errors={field: decision.reason})
            return
        enqueue_or_tell(
            core, jobs.issue_from_form, None, requester, count, note, jobs.new_batch_id(),
            channel, idempotent=False, then=ack,
            tell=lambda problem: ack(response_action="errors",
                                     errors={FORM_UNAVAILABLE: problem["text"]}))

    @app.shortcut(surfaces.SEND_IN_THREAD)
    def send_in_thread(ack: Ack, body: dict[str, Any], respond: Respond,
                       logger: Logger) -> None:
        channel = matches(CHANNEL_ID, (body.get("channel") or {}).get("id")) or ""
        requester = _who(body, channel=channel)
        url = body.get("response_url")
        decision = core.access.may_issue(requester.user_id, requester.channel_id)
        if not decision.allowed:
            enqueue_then_ack(core, ack, jobs.respond, url,
                             refusal(core, requester, "send_in_thread", decision.reason),
                             respond=respond)
            return
        message = body.get("message") or {}
        thread_ts = (matches(MESSAGE_TS, message.get("thread_ts"))
                     or matches(MESSAGE_TS, message.get("ts")))
        if thread_ts is None or not channel:
            enqueue_then_ack(core, ack, jobs.respond, url, messages.text_message(
                ":warning: The bot can't tell which message this is; try the shortcut "
                "again."), respond=respond)
            return
        enqueue_then_ack(core, ack, jobs.send_in_thread, url, requester, _author(message),
                         thread_ts, jobs.new_batch_id(), idempotent=False, respond=respond)


def _who(body: dict[str, Any], channel: str) -> Requester:
    return Requester(team_id=matches(TEAM_ID, (body.get("team") or {}).get("id")) or "",
                     user_id=matches(USER_ID, (body.get("user") or {}).get("id")) or "",
                     channel_id=channel)


def _author(message: dict[str, Any]) -> str:
    """The message author's user id, or for a bot or app the name Slack shows for it."""
    user = matches(USER_ID, message.get("user"))
    if user:
        return user
    name = (message.get("bot_profile") or {}).get("name") or message.get("username")
    return " ".join(str(name).split())[:80] if name else "unknown author"


def _may_use_form(core: Core, user_id: str) -> Decision:
    """The user part of the policy: the form asks for its channel only when submitted."""
    allowed_channels = core.settings.allowed_channel_ids
    return core.access.may_issue(user_id, allowed_channels[0] if allowed_channels else "")
