"""The jobs: the work a command does after its ack, run by `python -m bot worker`.

Listeners enqueue these by the names in `bot.engine.registry` (RQ stores each job by its
dotted name, so these names stay where they are); how a job runs and how one that failed is
accounted for is `bot.runtime.execution`'s. Everything a job sends goes through the core's
`delivery`.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.domain.models import Requester
from bot.domain.onboarding import AlreadyForgotten, BudgetWait
from bot.domain.previews import MAX_PREVIEWS
from bot.engine.queue import Reply, StepExecution, UnfurlTarget
from bot.engine.registry import Job
from bot.runtime.execution import (
    complete_with,
    current_core,
    finish_step,
    on_failure,
    perform,
    wait_for_budget,
)
from bot.slack import linkviews, messages, poller, surfaces
from bot.slack.blocks import Message, keeping_original
from bot.slack.core import EXPECTED_FAILURES, Core
from bot.slack.inputs import MAX_NOTE, USER_ID, note_of

log = logging.getLogger(__name__)

# RQ finds the failure callback by this module's name too (registry.ON_FAILURE).
__all__ = ["on_failure"]


# The commands and buttons: each answers through its response URL.

def issue_links(reply: Reply, requester: Requester, count: int, note: str, batch_id: str,
                told_to_wait: bool = False, force: bool = True) -> None:
    """Issue, as the ack said. The listener looked for the customer's live links before it
    (`force` is the flag jobs enqueued before then carry: issuing is what they were acked for
    too)."""
    def work(core: Core) -> Message | None:
        try:
            result = core.onboarding.issue(requester, count, note, batch_id=batch_id)
        except BudgetWait as wait:
            return wait_for_budget(core, reply, wait, told_to_wait,
                                   Job.ISSUE_LINKS, requester, count, note, batch_id)
        core.home.refresh(requester)
        return messages.issued(result)

    perform(reply, "issue_links", work)


def renew_batch(reply: Reply, requester: Requester, batch_id: str, new_batch_id: str,
                told_to_wait: bool = False) -> None:
    def work(core: Core) -> Message | None:
        try:
            result = core.onboarding.renew(requester, batch_id, new_batch_id,
                                           again=told_to_wait)
        except BudgetWait as wait:
            return wait_for_budget(core, reply, wait, told_to_wait,
                                   Job.RENEW_BATCH, requester, batch_id, new_batch_id)
        message = messages.renew_in_progress() if result is None else messages.issued(result)
        core.home.refresh(requester)
        return keeping_original(message)

    perform(reply, "renew_batch", work)


def check_token(reply: Reply, requester: Requester, token: str) -> None:
    perform(reply, "check_token",
            lambda core: messages.checked(core.onboarding.check(requester, token)))


def stop_reminders(reply: Reply, requester: Requester, batch_id: str) -> None:
    def work(core: Core) -> Message:
        first = core.onboarding.stop_reminders(requester, batch_id,
                                               is_admin=core.access.is_admin(requester.user_id))
        return keeping_original(messages.stopped() if first else linkviews.already_stopped())

    perform(reply, "stop_reminders", work)


def forget(reply: Reply, requester: Requester, token: str | None,
           batch_id: str | None) -> None:
    def work(core: Core) -> Message:
        try:
            result = core.onboarding.forget(requester, token=token, batch_id=batch_id,
                                            is_admin=core.access.is_admin(requester.user_id))
        except AlreadyForgotten:
            return keeping_original(linkviews.already_forgotten())
        core.home.refresh(requester)
        return keeping_original(messages.forgotten(result))

    perform(reply, "forget", work)


def share_batch(reply: Reply, requester: Requester, batch_id: str) -> None:
    def work(core: Core) -> Message:
        shared = core.onboarding.share_once(requester, batch_id,
                                            is_admin=core.access.is_admin(requester.user_id))
        if shared is None:  # posted on an earlier click
            return keeping_original(linkviews.already_posted())
        batch, links = shared
        try:
            core.delivery.post(batch.requester.channel_id,
                               messages.shared(batch, links, batch.requester))
        except SlackApiError as error:
            core.onboarding.share_failed(batch_id)
            return keeping_original(messages.cannot_post_here(str(error.response.get("error"))))
        except Exception:
            core.onboarding.share_failed(batch_id)  # RQ retries it: let that post
            raise
        return keeping_original(messages.posted_to_channel())

    perform(reply, "share_batch", work)


def refresh_home(reply: Reply, viewer: Requester) -> None:
    def work(core: Core) -> None:
        core.home.refresh(viewer)

    perform(reply, "refresh_home", work)


def refresh_usergroup(reply: Reply, group_id: str) -> None:
    """Fetch a user group's members into the shared cache, off the ack's path."""
    current_core().groups.refresh_now(group_id)


def respond(reply: Reply, message: Message) -> None:
    """A reply worked out by the listener, sent from here so the ack need not wait for it."""
    perform(reply, "respond", lambda core: keeping_original(message))


# The Slack surfaces beyond the commands: the Workflow Builder step, the form, the message
# shortcut and link previews. Same engine, same use cases as the commands.

STEP_BUDGET_WAIT = 300.0  # a workflow step waits this long at most for Exotel's budget


def run_workflow_step(reply: Reply, requester: Requester, count: int, note: str,
                      batch_id: str, execution: StepExecution) -> None:
    """Issue links for the workflow's user like /onboard-link, then complete the step."""
    core = current_core()
    try:
        result = core.onboarding.issue(requester, count, note, action="workflow",
                                       batch_id=batch_id)
    except BudgetWait as wait:
        if wait.seconds > STEP_BUDGET_WAIT:
            finish_step(core, execution, error=messages.problem(wait)["text"])
            return
        core.commands.enqueue(Job.RUN_WORKFLOW_STEP, reply, requester, count, note, batch_id,
                              execution, idempotent=False, delay=wait.seconds)
        return
    except EXPECTED_FAILURES as exc:
        log.warning("workflow step failed: %s", exc)
        finish_step(core, execution, error=messages.problem(exc)["text"])
        return
    complete_with(core, execution, result)
    core.home.refresh(requester)


def fail_workflow_step(reply: Reply, execution: StepExecution, error: str) -> None:
    """End a step the listener turned down (bad input, refusal) with a readable error."""
    finish_step(current_core(), execution, error=error)


def issue_from_form(reply: Reply, requester: Requester, count: int, note: str, batch_id: str,
                    post_to: str | None, told_to_wait: bool = False) -> None:
    """The form's links: a DM to the requester, and posted in `post_to` when chosen."""
    core = current_core()
    try:
        result = core.onboarding.issue(requester, count, note, action="form", batch_id=batch_id)
    except BudgetWait as wait:
        core.delivery.tell(requester.user_id, wait_for_budget(
            core, reply, wait, told_to_wait, Job.ISSUE_FROM_FORM, requester, count, note,
            batch_id, post_to))
        return
    except EXPECTED_FAILURES as exc:
        log.warning("form failed: %s", exc)
        core.delivery.tell(requester.user_id, messages.problem(exc))
        return
    core.delivery.tell(requester.user_id, surfaces.links_dm(result))
    if post_to and result.batch and result.links:
        _post_for(core, requester, post_to, messages.shared(result.batch, result.links,
                                                             requester))
    core.home.refresh(requester)


def send_in_thread(reply: Reply, requester: Requester, author: str, thread_ts: str,
                   batch_id: str, told_to_wait: bool = False) -> None:
    """One link for the message's author, posted in its thread (requester.channel_id)."""
    def work(core: Core) -> Message | None:
        note = _author_note(core, author)
        try:
            result = core.onboarding.issue(requester, 1, note, action="thread",
                                           batch_id=batch_id)
        except BudgetWait as wait:
            return wait_for_budget(core, reply, wait, told_to_wait, Job.SEND_IN_THREAD,
                                   requester, author, thread_ts, batch_id)
        if not result.links:
            return messages.issued(result)
        try:
            core.delivery.post(requester.channel_id, surfaces.thread_link(result, requester),
                               thread_ts=thread_ts)
        except SlackApiError as error:
            return surfaces.not_posted_in_thread(result, str(error.response.get("error")))
        finally:
            core.home.refresh(requester)
        return None  # the link is in the thread for everyone to see

    perform(reply, "send_in_thread", work)


def unfurl_links(reply: Reply, requester: Requester, target: UnfurlTarget,
                 urls: list[str]) -> None:
    """Previews of onboarding links pasted in a conversation (idempotent: retried)."""
    core = current_core()
    unfurls: dict[str, dict[str, Any]] = {}
    for url in urls[:MAX_PREVIEWS]:
        preview = core.previews.preview(url)
        if preview is None:
            continue
        unfurls[url] = surfaces.preview(preview)
        core.onboarding.previewed(requester, preview.token, preview.status)
    if not unfurls:
        return
    where: dict[str, Any] = ({"unfurl_id": target.unfurl_id, "source": target.source}
             if target.source == "composer" else {"channel": target.channel, "ts": target.ts})
    try:
        core.delivery.unfurl(where, unfurls)
    except SlackApiError as error:
        log.warning("chat.unfurl refused in %s: %s", target.channel,
                    error.response.get("error"))
    core.metrics.command("unfurl", "ok")


def tell_privately(reply: Reply, channel: str, user: str, message: Message) -> None:
    """A message only `user` sees in `channel` (when there is no response URL to use)."""
    core = current_core()
    try:
        core.delivery.ephemeral(channel, user, message)
    except SlackApiError as error:
        log.info("could not tell %s in %s (%s); sending a DM", user, channel,
                 error.response.get("error"))
        core.delivery.tell(user, message)


def _post_for(core: Core, requester: Requester, channel: str, message: Message) -> None:
    """Post in `channel` for the requester; if Slack won't, tell them why in a DM."""
    try:
        core.delivery.post(channel, message)
    except SlackApiError as error:
        core.delivery.tell(requester.user_id, surfaces.not_posted_in_channel(
            channel, str(error.response.get("error"))))
        return
    core.delivery.tell(requester.user_id, surfaces.posted_in_channel(channel))


def _author_note(core: Core, author: str) -> str:
    """The message author's name and workspace, for the link's customer note."""
    if not USER_ID.fullmatch(author):
        return note_of(author[:MAX_NOTE])  # a bot or app: the name Slack showed
    try:
        user = core.slack.users_info(user=author)["user"]
    except SlackApiError as error:
        log.info("users.info %s: %s; noting the id", author, error.response.get("error"))
        return author
    profile = user.get("profile") or {}
    name = str(profile.get("real_name") or profile.get("display_name") or user.get("name")
               or author)
    team_id = str(user.get("team_id") or profile.get("team") or "")
    team = team_id
    if team_id:
        with contextlib.suppress(SlackApiError, KeyError, TypeError):  # the id will do
            team = str(core.slack.team_info(team=team_id)["team"]["name"])
    return note_of((f"{name} ({team})" if team else name)[:MAX_NOTE])



# Scheduled: reminders and the status poll chain.

def send_reminder(batch_id: str, due: str, attempt: int = 0) -> str:
    """The reminder job (queue onboard-reminders): post one batch's reminder, once."""
    return current_core().reminder_sender.send(batch_id, datetime.fromisoformat(due), attempt)


def poll_statuses(slot: int) -> str:
    """The RQ job: one round of polling, then the next round scheduled."""
    core = current_core()
    interval = core.settings.status_poll_seconds
    try:
        if not core.store.first_time(f"poll:{slot}", timedelta(seconds=interval * 2)):
            return "already polled in this slot"
        result = core.poller.poll_once()
        outcome = (f"checked {result.checked}, used {','.join(result.used) or 'none'}"
                   + (", out of budget" if result.out_of_budget else ""))
        log.info("status poll: %s", outcome)
        return outcome
    finally:
        try:
            poller.schedule_next(core.poller.queue, interval)
        except Exception:  # Redis down: the next worker start begins the chain again
            log.warning("could not schedule the next status poll", exc_info=True)
