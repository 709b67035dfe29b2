"""The work a command does after its ack: RQ jobs run by `python -m bot worker`.

Each job gets the command's `Reply` first and answers through it. Delivery is at least
once: every job but issuing is idempotent and RQ retries it; issuing calls Exotel's POST,
which is not, so it is never retried. Its links are recorded one by one as Exotel returns
them, under a batch id chosen at enqueue, and a command cut short (its worker killed) is
accounted for by `on_failure`: what was made is shown, what was not is said.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any

from redis import Redis
from rq.job import Job as RQJob
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from slack_sdk.webhook import WebhookClient

from bot.domain.models import Requester
from bot.domain.onboarding import AlreadyForgotten, BudgetWait, IssueResult
from bot.domain.previews import MAX_PREVIEWS
from bot.engine.queue import Reply, StepExecution, UnfurlTarget
from bot.engine.registry import Job
from bot.exotel.tokens import mask
from bot.runtime.composition import build_core
from bot.settings import load_settings
from bot.slack import linkviews, messages, poller, surfaces
from bot.slack.command_text import MAX_NOTE
from bot.slack.core import EXPECTED_FAILURES, Core
from bot.slack.inputs import USER_ID, note_of

log = logging.getLogger(__name__)

Work = Callable[[Core], messages.Message | None]

_core: Core | None = None


def use_core(core: Core | None) -> None:
    """Jobs in this process use `core` (the worker at start, and tests)."""
    global _core
    _core = core


def current_core() -> Core:
    global _core
    if _core is None:
        _core = build_core(load_settings())
    return _core


# The jobs. Listeners enqueue these by name (bot.engine.queue.Job).

def issue_links(reply: Reply, requester: Requester, count: int, note: str, batch_id: str,
                told_to_wait: bool = False, force: bool = False) -> None:
    """`force`: issue even if the customer has live links ("Issue a new one anyway")."""
    def work(core: Core) -> messages.Message | None:
        if not (told_to_wait or force):
            existing = core.onboarding.existing(requester, count, note)
            if existing is not None:  # no Exotel call: the customer has live links
                return linkviews.already_issued(*existing, count, note)
        try:
            result = core.onboarding.issue(requester, count, note, batch_id=batch_id)
        except BudgetWait as wait:
            return _wait_for_budget(core, reply, wait, told_to_wait,
                                    Job.ISSUE_LINKS, requester, count, note, batch_id)
        core.home.refresh(requester)
        return messages.issued(result)

    _perform(reply, "issue_links", work)


def renew_batch(reply: Reply, requester: Requester, batch_id: str, new_batch_id: str,
                told_to_wait: bool = False) -> None:
    def work(core: Core) -> messages.Message | None:
        try:
            result = core.onboarding.renew(requester, batch_id, new_batch_id,
                                           again=told_to_wait)
        except BudgetWait as wait:
            return _wait_for_budget(core, reply, wait, told_to_wait,
                                    Job.RENEW_BATCH, requester, batch_id, new_batch_id)
        message = messages.renew_in_progress() if result is None else messages.issued(result)
        core.home.refresh(requester)
        return messages.keeping_original(message)

    _perform(reply, "renew_batch", work)


def check_token(reply: Reply, requester: Requester, token: str) -> None:
    _perform(reply, "check_token",
             lambda core: messages.checked(core.onboarding.check(requester, token)))


def stop_reminders(reply: Reply, requester: Requester, batch_id: str) -> None:
    def work(core: Core) -> messages.Message:
        first = core.onboarding.stop_reminders(requester, batch_id,
                                               is_admin=core.access.is_admin(requester.user_id))
        return messages.keeping_original(
            messages.stopped() if first else linkviews.already_stopped())

    _perform(reply, "stop_reminders", work)


def forget(reply: Reply, requester: Requester, token: str | None,
           batch_id: str | None) -> None:
    def work(core: Core) -> messages.Message:
        try:
            result = core.onboarding.forget(requester, token=token, batch_id=batch_id,
                                            is_admin=core.access.is_admin(requester.user_id))
        except AlreadyForgotten:
            return messages.keeping_original(linkviews.already_forgotten())
        core.home.refresh(requester)
        return messages.keeping_original(messages.forgotten(result))

    _perform(reply, "forget", work)


def share_batch(reply: Reply, requester: Requester, batch_id: str) -> None:
    def work(core: Core) -> messages.Message:
        from slack_sdk.errors import SlackApiError

        shared = core.onboarding.share_once(requester, batch_id,
                                            is_admin=core.access.is_admin(requester.user_id))
        if shared is None:  # posted on an earlier click
            return messages.keeping_original(linkviews.already_posted())
        batch, links = shared
        post = messages.shared(batch, links, batch.requester)
        if core.onboarding.exotel.sandbox:
            post = messages.sandboxed(post)
        try:
            core.slack.chat_postMessage(channel=batch.requester.channel_id, **post)
        except SlackApiError as error:
            core.onboarding.share_failed(batch_id)
            return messages.keeping_original(
                messages.cannot_post_here(str(error.response.get("error"))))
        except Exception:
            core.onboarding.share_failed(batch_id)  # RQ retries it: let that post
            raise
        return messages.keeping_original(messages.posted_to_channel())

    _perform(reply, "share_batch", work)


def refresh_home(reply: Reply, viewer: Requester) -> None:
    def work(core: Core) -> None:
        core.home.refresh(viewer)

    _perform(reply, "refresh_home", work)


def refresh_usergroup(reply: Reply, group_id: str) -> None:
    """Fetch a user group's members into the shared cache, off the ack's path."""
    current_core().groups.refresh_now(group_id)


def respond(reply: Reply, message: messages.Message) -> None:
    """A reply worked out by the listener, sent from here so the ack need not wait for it."""
    _perform(reply, "respond", lambda core: messages.keeping_original(message))


# How every job runs, and how one that failed for good is accounted for.

def _perform(reply: Reply, name: str, work: Work) -> None:
    if reply.lapsed():
        log.warning("%s job dropped: it could not start within 30 minutes of the command, "
                    "and Slack's reply URL has lapsed", name)
        return
    core = current_core()
    try:
        message = work(core)
    except EXPECTED_FAILURES as exc:  # news for the user, not a bug
        log.warning("%s failed: %s", name, exc)
        core.metrics.command(name, "failed")
        message = messages.problem(exc)
    else:
        core.metrics.command(name, "ok")
    # Anything else propagates: RQ retries idempotent jobs, then `on_failure` answers.
    send(core, reply, message)


def _wait_for_budget(core: Core, reply: Reply, wait: BudgetWait, told: bool,
                     job: Job, *args: Any) -> messages.Message | None:
    """Queue the command again for when Exotel's budget has room; tell the user once."""
    seconds = wait.seconds
    if reply.lapsed(after=seconds + 60):
        requester = args[0]
        core.onboarding.refused(requester, "issue" if job is Job.ISSUE_LINKS else "renew",
                                str(wait), outcome="rate-limited")
        return messages.problem(wait)
    core.commands.enqueue(job, reply, *args, True, idempotent=False, delay=seconds)
    log.info("%s waits %.0f s for Exotel's request budget", job.short_name, seconds)
    if told:
        return None
    return messages.budget_wait(wait.count, core.settings.exotel_rate_per_minute, seconds)


def send(core: Core, reply: Reply, message: messages.Message | None) -> None:
    """Post `message` to the command's response URL (sandbox-marked when so)."""
    if reply.url is None or message is None:
        return
    if core.onboarding.exotel.sandbox:
        message = messages.sandboxed(message)
    try:
        WebhookClient(reply.url, timeout=10,
                      retry_handlers=[ConnectionErrorRetryHandler()]).send_dict(dict(message))
    except Exception:
        log.exception("could not send the reply to Slack")


def on_failure(job: RQJob, connection: Redis, exc_type: type[BaseException],
               exc: BaseException, tb: TracebackType | None) -> None:
    """RQ calls this when a job raised, timed out, or its worker died (AbandonedJobError)."""
    if job.retries_left:
        return  # RQ runs it again
    if job.func_name in (Job.RUN_WORKFLOW_STEP, Job.ISSUE_FROM_FORM):
        _cut_short(job)  # no response URL: the step, or the requester by DM, is told
        return
    reply = job.args[0] if job.args else None
    if not isinstance(reply, Reply) or reply.lapsed():
        log.error("job %s failed for good (%s), with no one left to tell", job.func_name,
                  exc_type.__name__)
        return
    core = current_core()
    name = job.func_name or ""
    core.metrics.command(name.rsplit(".", 1)[-1], "failed")
    log.error("job %s failed for good: %s", job.func_name, exc_type.__name__)
    message = messages.problem(exc)
    if job.func_name in (Job.ISSUE_LINKS, Job.RENEW_BATCH):
        message = messages.issued(_account_for(core, job))
    send(core, reply, message)


def _account_for(core: Core, job: RQJob) -> IssueResult:
    """What an issuing job cut short made, from the batch it was recording."""
    if job.func_name == Job.ISSUE_LINKS:
        _, requester, count, note, batch_id, *_ = job.args
    else:  # renew: the count and note are those of the batch renewed
        _, requester, old_batch_id, batch_id, *_ = job.args
        old = core.store.get_batch(old_batch_id)
        made = core.store.get_batch(batch_id)
        source = old or made
        count = len(source.tokens) if source else 0
        note = source.note if source else ""
    return core.onboarding.account_for(requester, count, note, batch_id)


# The Slack surfaces beyond the commands (issue 15): the Workflow Builder step, the form,
# the message shortcut and link previews. Same engine, same use cases as the commands.

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
            _finish_step(core, execution, error=messages.problem(wait)["text"])
            return
        core.commands.enqueue(Job.RUN_WORKFLOW_STEP, reply, requester, count, note, batch_id,
                              execution, idempotent=False, delay=wait.seconds)
        return
    except EXPECTED_FAILURES as exc:
        log.warning("workflow step failed: %s", exc)
        _finish_step(core, execution, error=messages.problem(exc)["text"])
        return
    _complete_with(core, execution, result)
    core.home.refresh(requester)


def fail_workflow_step(reply: Reply, execution: StepExecution, error: str) -> None:
    """End a step the listener turned down (bad input, refusal) with a readable error."""
    _finish_step(current_core(), execution, error=error)


def issue_from_form(reply: Reply, requester: Requester, count: int, note: str, batch_id: str,
                    post_to: str | None, told_to_wait: bool = False) -> None:
    """The form's links: a DM to the requester, and posted in `post_to` when chosen."""
    core = current_core()
    try:
        result = core.onboarding.issue(requester, count, note, action="form", batch_id=batch_id)
    except BudgetWait as wait:
        waiting = _wait_for_budget(core, reply, wait, told_to_wait, Job.ISSUE_FROM_FORM,
                                   requester, count, note, batch_id, post_to)
        _direct_message(core, requester.user_id, waiting)
        return
    except EXPECTED_FAILURES as exc:
        log.warning("form failed: %s", exc)
        _direct_message(core, requester.user_id, messages.problem(exc))
        return
    _direct_message(core, requester.user_id, surfaces.links_dm(result))
    if post_to and result.batch and result.links:
        _post_for(core, requester, post_to, messages.shared(result.batch, result.links,
                                                             requester))
    core.home.refresh(requester)


def send_in_thread(reply: Reply, requester: Requester, author: str, thread_ts: str,
                   batch_id: str, told_to_wait: bool = False) -> None:
    """One link for the message's author, posted in its thread (requester.channel_id)."""
    def work(core: Core) -> messages.Message | None:
        note = _author_note(core, author)
        try:
            result = core.onboarding.issue(requester, 1, note, action="thread",
                                           batch_id=batch_id)
        except BudgetWait as wait:
            return _wait_for_budget(core, reply, wait, told_to_wait, Job.SEND_IN_THREAD,
                                    requester, author, thread_ts, batch_id)
        if not result.links:
            return messages.issued(result)
        try:
            core.slack.chat_postMessage(channel=requester.channel_id, thread_ts=thread_ts,
                                        **surfaces.thread_link(result, requester))
        except SlackApiError as error:
            return surfaces.not_posted_in_thread(result, str(error.response.get("error")))
        finally:
            core.home.refresh(requester)
        return None  # the link is in the thread for everyone to see

    _perform(reply, "send_in_thread", work)


def unfurl_links(reply: Reply, requester: Requester, target: UnfurlTarget,
                 urls: list[str]) -> None:
    """Previews of onboarding links pasted in a conversation (idempotent: retried)."""
    core = current_core()
    found = core.previews
    unfurls: dict[str, dict[str, Any]] = {}
    for url in urls[:MAX_PREVIEWS]:
        preview = found.preview(url)
        if preview is None:
            continue
        unfurls[url] = surfaces.preview(preview)
        core.onboarding._record("unfurl", requester, None, tokens=[mask(preview.token)],
                                detail=preview.status or "unknown")
    if not unfurls:
        return
    where: dict[str, Any] = ({"unfurl_id": target.unfurl_id, "source": target.source}
             if target.source == "composer" else {"channel": target.channel, "ts": target.ts})
    try:
        core.slack.chat_unfurl(**where, unfurls=unfurls)
    except SlackApiError as error:
        log.warning("chat.unfurl refused in %s: %s", target.channel,
                    error.response.get("error"))
    core.metrics.command("unfurl", "ok")


def tell_privately(reply: Reply, channel: str, user: str, message: messages.Message) -> None:
    """A message only `user` sees in `channel` (when there is no response URL to use)."""
    core = current_core()
    try:
        core.slack.chat_postEphemeral(channel=channel, user=user, **message)
    except SlackApiError as error:
        log.info("could not tell %s in %s (%s); sending a DM", user, channel,
                 error.response.get("error"))
        _direct_message(core, user, message)


def _complete_with(core: Core, execution: StepExecution, result: IssueResult) -> None:
    if not result.links:
        _finish_step(core, execution, error=messages.issued(result)["text"])
        return
    urls = [link.url for link in result.links]
    _finish_step(core, execution, outputs={"links": "\n".join(urls), "first_link": urls[0]})


def _finish_step(core: Core, execution: StepExecution, *, error: str | None = None,
                 outputs: dict[str, str] | None = None) -> None:
    client = WebClient(token=execution.token, base_url=core.settings.slack_api_url,
                       timeout=10, retry_handlers=[ConnectionErrorRetryHandler(),
                                                   RateLimitErrorRetryHandler(max_retry_count=3)])
    outcome = "ok" if error is None else "failed"
    try:
        if error is None:
            client.functions_completeSuccess(function_execution_id=execution.execution_id,
                                             outputs=outputs or {})
        else:
            client.functions_completeError(function_execution_id=execution.execution_id,
                                           error=surfaces.step_error(error))
    except SlackApiError as failure:
        log.error("could not complete workflow step %s: %s", execution.execution_id,
                  failure.response.get("error"))
        outcome = "failed"
    core.metrics.command("workflow_step", outcome)


def _cut_short(job: RQJob) -> None:
    """A step or form whose worker died: what it made (tracked, reminded) is handed over."""
    _, requester, count, note, batch_id, last, *_ = job.args
    core = current_core()
    result = core.onboarding.account_for(requester, count, note, batch_id)
    if isinstance(last, StepExecution):
        _complete_with(core, last, result)
    else:
        _direct_message(core, requester.user_id, surfaces.links_dm(result))


def _direct_message(core: Core, user: str, message: messages.Message | None) -> None:
    if message is None:
        return
    if core.onboarding.exotel.sandbox:
        message = messages.sandboxed(message)
    try:
        channel = core.slack.conversations_open(users=user)["channel"]["id"]
        core.slack.chat_postMessage(channel=channel, **messages.as_post(message))
    except SlackApiError as error:
        log.error("could not send %s a direct message: %s", user, error.response.get("error"))


def _post_for(core: Core, requester: Requester, channel: str,
              message: messages.Message) -> None:
    """Post in `channel` for the requester; if Slack won't, tell them why in a DM."""
    try:
        core.slack.chat_postMessage(channel=channel, **message)
    except SlackApiError as error:
        _direct_message(core, requester.user_id, surfaces.not_posted_in_channel(
            channel, str(error.response.get("error"))))
        return
    _direct_message(core, requester.user_id, surfaces.posted_in_channel(channel))


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


def send_reminder(batch_id: str, due: str, attempt: int = 0) -> str:
    """The reminder job (queue onboard-reminders): post one batch's reminder, once."""
    from datetime import datetime

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
