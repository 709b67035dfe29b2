"""The jobs: the work a command does after its ack, run by `python -m bot worker`.

Listeners enqueue these by the names in `bot.engine.registry` (RQ stores each job by its
dotted name, so these names stay where they are); how a job runs and how one that failed is
accounted for is `bot.runtime.execution`'s: each job is a `logged_job` and returns what it
did, which its one log line says. Everything a job sends goes through the core's `delivery`.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from rq import get_current_job
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.domain.digest import EVENT_TYPE as DIGEST_EVENT
from bot.domain.digest import DigestBusy
from bot.domain.events import Sealed
from bot.domain.history import summarise, to_csv
from bot.domain.models import Requester
from bot.domain.onboarding import AlreadyForgotten, BudgetWait
from bot.domain.previews import MAX_PREVIEWS
from bot.domain.reminders import DM_INSTEAD
from bot.domain.store import now
from bot.engine.queue import Reply, StepExecution, UnfurlTarget
from bot.engine.registry import Job
from bot.exotel.tokens import mask
from bot.runtime.execution import (
    Answer,
    Done,
    complete_with,
    current_core,
    finish_step,
    issued,
    logged_job,
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

@logged_job
def issue_links(reply: Reply, requester: Requester, count: int, note: str, batch_id: str,
                told_to_wait: bool = False, force: bool = True, *,
                customer_ref: str = "") -> Done:
    """Issue, as the ack said. The listener looked for the customer's live links before it
    (`force` is the flag jobs enqueued before then carry: issuing is what they were acked for
    too). `customer_ref`: the CRM reference the listener checked, by name (jobs queued
    before references existed have none)."""
    def work(core: Core) -> Answer:
        try:
            result = core.onboarding.issue(requester, count, note, batch_id=batch_id,
                                           customer_ref=customer_ref)
        except BudgetWait as wait:
            return wait_for_budget(core, reply, wait, told_to_wait,
                                   Job.ISSUE_LINKS, requester, count, note, batch_id,
                                   job_kwargs={"customer_ref": customer_ref})
        core.home.refresh(requester)
        return Answer(messages.issued(result), issued(result))

    return perform(reply, "issue_links", work)


@logged_job
def renew_batch(reply: Reply, requester: Requester, batch_id: str, new_batch_id: str,
                told_to_wait: bool = False) -> Done:
    def work(core: Core) -> Answer:
        try:
            result = core.onboarding.renew(requester, batch_id, new_batch_id,
                                           again=told_to_wait)
        except BudgetWait as wait:
            return wait_for_budget(core, reply, wait, told_to_wait,
                                   Job.RENEW_BATCH, requester, batch_id, new_batch_id)
        core.home.refresh(requester)
        if result is None:
            return Answer(keeping_original(messages.renew_in_progress()), "a second click")
        return Answer(keeping_original(messages.issued(result)), issued(result))

    return perform(reply, "renew_batch", work)


@logged_job
def check_token(reply: Reply, requester: Requester, token: str) -> Done:
    def work(core: Core) -> Answer:
        result = core.onboarding.check(requester, token)
        return Answer(messages.checked(result), f"{mask(token)} is {result.status}")

    return perform(reply, "check_token", work)


@logged_job
def stop_reminders(reply: Reply, requester: Requester, batch_id: str) -> Done:
    def work(core: Core) -> Answer:
        first = core.onboarding.stop_reminders(requester, batch_id,
                                               is_admin=core.access.is_admin(requester.user_id))
        if first:
            return Answer(keeping_original(messages.stopped()), f"stopped batch {batch_id}")
        return Answer(keeping_original(linkviews.already_stopped()), "already stopped")

    return perform(reply, "stop_reminders", work)


@logged_job
def forget(reply: Reply, requester: Requester, token: str | None,
           batch_id: str | None) -> Done:
    def work(core: Core) -> Answer:
        try:
            result = core.onboarding.forget(requester, token=token, batch_id=batch_id,
                                            is_admin=core.access.is_admin(requester.user_id))
        except AlreadyForgotten:
            return Answer(keeping_original(linkviews.already_forgotten()), "already forgotten")
        core.home.refresh(requester)
        what = mask(result.token) if result.token else f"batch {result.batch.batch_id}"
        return Answer(keeping_original(messages.forgotten(result)), f"forgot {what}")

    return perform(reply, "forget", work)


@logged_job
def share_batch(reply: Reply, requester: Requester, batch_id: str) -> Done:
    def work(core: Core) -> Answer:
        shared = core.onboarding.share_once(requester, batch_id,
                                            is_admin=core.access.is_admin(requester.user_id))
        if shared is None:  # posted on an earlier click
            return Answer(keeping_original(linkviews.already_posted()), "already posted")
        batch, links = shared
        channel = batch.requester.channel_id
        try:
            core.delivery.post(channel, messages.shared(batch, links, batch.requester))
        except SlackApiError as error:
            core.onboarding.share_failed(batch_id)
            reason = str(error.response.get("error"))
            return Answer(keeping_original(messages.cannot_post_here(reason)),
                          f"not posted in {channel}: {reason}")
        except Exception:
            core.onboarding.share_failed(batch_id)  # RQ retries it: let that post
            raise
        return Answer(keeping_original(messages.posted_to_channel()), f"posted in {channel}")

    return perform(reply, "share_batch", work)


@logged_job
def refresh_home(reply: Reply, viewer: Requester) -> Done:
    def work(core: Core) -> Answer:
        core.home.refresh(viewer)
        return Answer(None, "App Home published")

    return perform(reply, "refresh_home", work)


@logged_job
def refresh_usergroup(reply: Reply, group_id: str) -> Done:
    """Fetch a user group's members into the shared cache, off the ack's path."""
    if current_core().groups.refresh_now(group_id):  # a failure is a warning of its own
        return Done(f"user group {group_id} cached", logging.DEBUG)  # housekeeping
    return Done(f"user group {group_id} not cached")


@logged_job
def respond(reply: Reply, message: Message) -> Done:
    """A reply worked out by the listener, sent from here so the ack need not wait for it."""
    return perform(reply, "respond", lambda core: Answer(keeping_original(message), "answered"))


# The Slack surfaces beyond the commands: the Workflow Builder step, the form, the message
# shortcut and link previews. Same engine, same use cases as the commands.

STEP_BUDGET_WAIT = 300.0  # a workflow step waits this long at most for Exotel's budget


@logged_job
def run_workflow_step(reply: Reply, requester: Requester, count: int, note: str,
                      batch_id: str, execution: StepExecution, *,
                      customer_ref: str = "") -> Done:
    """Issue links for the workflow's user like /onboard-link, then complete the step."""
    core = current_core()
    try:
        result = core.onboarding.issue(requester, count, note, action="workflow",
                                       batch_id=batch_id, customer_ref=customer_ref)
    except BudgetWait as wait:
        if wait.seconds > STEP_BUDGET_WAIT:
            return Done(finish_step(core, execution, error=messages.problem(wait)["text"]))
        core.commands.enqueue(Job.RUN_WORKFLOW_STEP, reply, requester, count, note, batch_id,
                              execution, idempotent=False, delay=wait.seconds,
                              job_kwargs={"customer_ref": customer_ref})
        return Done(f"waits {wait.seconds:.0f} s for Exotel's request budget")
    except EXPECTED_FAILURES as exc:
        finish_step(core, execution, error=messages.problem(exc)["text"])
        return Done(f"failed: {exc}", logging.WARNING)
    completed = complete_with(core, execution, result)
    core.home.refresh(requester)
    return Done(f"{issued(result)}; {completed}")


@logged_job
def fail_workflow_step(reply: Reply, execution: StepExecution, error: str) -> Done:
    """End a step the listener turned down (bad input, refusal) with a readable error."""
    return Done(finish_step(current_core(), execution, error=error))


@logged_job
def issue_from_form(reply: Reply, requester: Requester, count: int, note: str, batch_id: str,
                    post_to: str | None, told_to_wait: bool = False, *,
                    customer_ref: str = "") -> Done:
    """The form's links: a DM to the requester, and posted in `post_to` when chosen."""
    core = current_core()
    try:
        result = core.onboarding.issue(requester, count, note, action="form", batch_id=batch_id,
                                       customer_ref=customer_ref)
    except BudgetWait as wait:
        message, did = wait_for_budget(core, reply, wait, told_to_wait, Job.ISSUE_FROM_FORM,
                                       requester, count, note, batch_id, post_to,
                                       job_kwargs={"customer_ref": customer_ref})
        core.delivery.tell(requester.user_id, message)
        return Done(did)
    except EXPECTED_FAILURES as exc:
        core.delivery.tell(requester.user_id, messages.problem(exc))
        return Done(f"failed: {exc}", logging.WARNING)
    core.delivery.tell(requester.user_id, surfaces.links_dm(result))
    did = issued(result)
    if post_to and result.batch and result.links:
        did += "; " + _post_for(core, requester, post_to, messages.shared(
            result.batch, result.links, requester))
    core.home.refresh(requester)
    return Done(did)


@logged_job
def send_in_thread(reply: Reply, requester: Requester, author: str, thread_ts: str,
                   batch_id: str, told_to_wait: bool = False) -> Done:
    """One link for the message's author, posted in its thread (requester.channel_id)."""
    def work(core: Core) -> Answer:
        note = _author_note(core, author)
        try:
            result = core.onboarding.issue(requester, 1, note, action="thread",
                                           batch_id=batch_id)
        except BudgetWait as wait:
            return wait_for_budget(core, reply, wait, told_to_wait, Job.SEND_IN_THREAD,
                                   requester, author, thread_ts, batch_id)
        if not result.links:
            return Answer(messages.issued(result), issued(result))
        try:
            core.delivery.post(requester.channel_id, surfaces.thread_link(result, requester),
                               thread_ts=thread_ts)
        except SlackApiError as error:
            reason = str(error.response.get("error"))
            return Answer(surfaces.not_posted_in_thread(result, reason),
                          f"{issued(result)}; not posted in the thread: {reason}")
        finally:
            core.home.refresh(requester)
        # No answer: the link is in the thread for everyone to see.
        return Answer(None, f"{issued(result)}; posted in the thread")

    return perform(reply, "send_in_thread", work)


@logged_job
def unfurl_links(reply: Reply, requester: Requester, target: UnfurlTarget,
                 urls: list[str]) -> Done:
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
        return Done("no onboarding link to preview")
    where: dict[str, Any] = ({"unfurl_id": target.unfurl_id, "source": target.source}
             if target.source == "composer" else {"channel": target.channel, "ts": target.ts})
    done = Done(f"{len(unfurls)} previews in {target.channel}")
    try:
        core.delivery.unfurl(where, unfurls)
    except SlackApiError as error:
        done = Done(f"chat.unfurl refused in {target.channel}: "
                    f"{error.response.get('error')}", logging.WARNING)
    core.metrics.command("unfurl", "ok")
    return done


@logged_job
def tell_privately(reply: Reply, channel: str, user: str, message: Message) -> Done:
    """A message only `user` sees in `channel` (when there is no response URL to use)."""
    core = current_core()
    try:
        core.delivery.ephemeral(channel, user, message)
    except SlackApiError as error:
        core.delivery.tell(user, message)
        return Done(f"told {user} by DM (not in {channel}: {error.response.get('error')})")
    return Done(f"told {user} in {channel}")


@logged_job
def send_report(reply: Reply, requester: Requester, days: int, team: bool) -> Done:
    """`/onboard-link report [days]`: the summary of the last `days` days on the response
    URL, and the CSV of their links (one row each) in the requester's DM. `team`: the
    listener found them an admin, so the whole team's links, else their own."""
    def work(core: Core) -> Answer:
        moment = now()
        records = core.history.period(requester.team_id, None if team else requester.user_id,
                                      moment - timedelta(days=days))
        summary = summarise(records, moment)
        if not records:
            return Answer(messages.report(summary, days, team, ""), "an empty report")
        try:
            core.delivery.upload_to_dm(
                requester.user_id, content=to_csv(records, moment),
                filename=f"onboarding-links-{moment:%Y-%m-%d}-{days}d.csv",
                title=f"Onboarding links, last {days} days",
                comment=f"The links of your `/onboard-link report {days}`, one row each.")
        except SlackClientError as error:
            reason = (error.response.get("error") if isinstance(error, SlackApiError)
                      else type(error).__name__)
            note = f":warning: The CSV could not be sent to your DMs: Slack said `{reason}`."
            return Answer(messages.report(summary, days, team, note),
                          f"a report of {len(records)} links; CSV not sent: {reason}")
        note = f":page_facing_up: The CSV of these {len(records)} links is in your DMs."
        return Answer(messages.report(summary, days, team, note),
                      f"a report of {len(records)} links, CSV sent")

    return perform(reply, "send_report", work)


def _post_for(core: Core, requester: Requester, channel: str, message: Message) -> str:
    """Post in `channel` for the requester; if Slack won't, tell them why in a DM."""
    try:
        core.delivery.post(channel, message)
    except SlackApiError as error:
        reason = str(error.response.get("error"))
        core.delivery.tell(requester.user_id, surfaces.not_posted_in_channel(channel, reason))
        return f"not posted in {channel}: {reason}"
    core.delivery.tell(requester.user_id, surfaces.posted_in_channel(channel))
    return f"posted in {channel}"


def _author_note(core: Core, author: str) -> str:
    """The message author's name and workspace, for the link's customer note."""
    if not USER_ID.fullmatch(author):
        return note_of(author[:MAX_NOTE])  # a bot or app: the name Slack showed
    try:
        user = core.slack.users_info(user=author)["user"]
    except SlackApiError as error:
        log.debug("users.info %s: %s; noting the id", author, error.response.get("error"))
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



# Scheduled: reminders, the status poll chain and the managers' digest.

@logged_job
def send_reminder(batch_id: str, due: str, attempt: int = 0) -> Done:
    """The reminder job (queue onboard-reminders): post one batch's reminder, once."""
    outcome = current_core().reminder_sender.send(batch_id, datetime.fromisoformat(due), attempt)
    return Done(f"batch {batch_id}: {outcome}")


@logged_job
def poll_statuses(slot: int) -> Done:
    """The RQ job: one round of polling, then the next round scheduled. A round in which
    no link turned USED and no check failed is routine: its line shows only at DEBUG."""
    core = current_core()
    interval = core.settings.status_poll_seconds
    try:
        if not core.store.first_time(f"poll:{slot}", timedelta(seconds=interval * 2)):
            return Done("already polled in this slot", logging.DEBUG)
        result = core.poller.poll_once()
        return Done(str(result), logging.INFO if result.used or result.failed else logging.DEBUG)
    finally:
        try:
            poller.schedule_next(core.poller.queue, interval)
        except Exception:  # Redis down: the next worker start begins the chain again
            log.warning("could not schedule the next status poll", exc_info=True)


@logged_job
def send_digest(tick: str, since: str) -> Done:
    """The managers' digest of the links issued from `since` to the DIGEST_CRON `tick`
    (ISO-8601, UTC), whole team's, posted in DIGEST_CHANNEL once; nothing for an empty
    period. RQ delivers at least once: the tick is claimed before posting and marked
    posted after (`Digests.claim`, `posted`), and a copy that finds it posted posts
    nothing. Left open: a worker killed (or Slack's answer lost) after Slack took the post
    and before the mark, a window of the post's round trip, is retried and posts again.

    The team: the bot token's workspace (auth.test), the one the bot is installed in."""
    core = current_core()
    digests, channel = core.digests, core.settings.digest_channel
    if digests is None or channel is None:
        return Done(f"digest for {tick} dropped: DIGEST_CHANNEL is not set", logging.WARNING)
    until, start = datetime.fromisoformat(tick), datetime.fromisoformat(since)
    claimed = digests.claim(until)
    if claimed == "done":
        return Done(f"digest for {tick} already posted", logging.DEBUG)
    if claimed == "busy":
        raise DigestBusy(tick)  # RQ tries again after the claim has lapsed
    team_id = str(core.slack.auth_test()["team_id"])
    records = core.history.period(team_id, None, start, until=until)
    if not records:
        digests.posted(until)
        return Done(f"digest for {tick}: no link issued since {since}, nothing posted")
    summary = summarise(records, until)
    try:
        core.delivery.post(channel, messages.digest(summary, start, until),
                           metadata={"event_type": DIGEST_EVENT, "event_payload": {"tick": tick}})
    except SlackApiError as error:
        reason = str(error.response.get("error"))
        if reason not in DM_INSTEAD:  # the channel refuses: no retry would do better
            raise
        digests.posted(until)
        return Done(f"digest for {tick} not posted in {channel}: {reason}", logging.WARNING)
    digests.posted(until)
    return Done(f"digest for {tick} posted in {channel}: {len(records)} links, "
                f"{len(summary.reps)} reps, {len(summary.follow_up)} to follow up")


# Webhook deliveries (queue onboard-webhooks).

@logged_job
def deliver_webhook(url_key: str, event_id: str, body: Sealed) -> Done:
    """One attempt to deliver one event to one receiver; raises (and RQ retries it on
    WEBHOOK_RETRY_SCHEDULE) while the receiver gives no 2xx answer."""
    core = current_core()
    if core.webhooks is None:
        return Done(f"{event_id} dropped: WEBHOOK_URLS is not set", logging.WARNING)
    job = get_current_job()
    retries = int(job.meta.get("retries", 0)) if job else 0
    left = int(job.retries_left or 0) if job else 0
    did = core.webhooks.deliver(url_key, event_id, body, failed_before=left < retries,
                                last=left == 0)
    return Done(did.said, logging.WARNING if did.trouble else logging.INFO)
