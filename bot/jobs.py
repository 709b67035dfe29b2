"""The work a command does after its ack: RQ jobs run by `python -m bot worker`.

Each job gets the command's `Reply` first and answers through it. Delivery is at least
once: every job but issuing is idempotent and RQ retries it; issuing calls Exotel's POST,
which is not, so it is never retried. Its links are recorded one by one as Exotel returns
them, under a batch id chosen at enqueue, and a command cut short (its worker killed) is
accounted for by `on_failure`: what was made is shown, what was not is said.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

from redis import Redis
from rq.job import Job
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from bot import linkviews, messages
from bot.core import EXPECTED_FAILURES, Core, build_core
from bot.models import Requester
from bot.onboarding import AlreadyForgotten, BudgetWait, IssueResult
from bot.queue import RESPONSE_URL_LIFE, Reply
from bot.settings import load_settings

log = logging.getLogger(__name__)

KEEP_ORIGINAL = {"replace_original": False}  # button replies leave the clicked message alone
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


def new_batch_id() -> str:
    return uuid.uuid4().hex


# The jobs. Listeners enqueue these by reference (see bot.queue.CommandQueue).

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
                                    issue_links, requester, count, note, batch_id)
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
                                    renew_batch, requester, batch_id, new_batch_id)
        message = messages.renew_in_progress() if result is None else messages.issued(result)
        core.home.refresh(requester)
        return {**message, **KEEP_ORIGINAL}

    _perform(reply, "renew_batch", work)


def check_token(reply: Reply, requester: Requester, token: str) -> None:
    _perform(reply, "check_token",
             lambda core: messages.checked(core.onboarding.check(requester, token)))


def stop_reminders(reply: Reply, requester: Requester, batch_id: str) -> None:
    def work(core: Core) -> messages.Message:
        first = core.onboarding.stop_reminders(requester, batch_id)
        return {**(messages.stopped() if first else linkviews.already_stopped()),
                **KEEP_ORIGINAL}

    _perform(reply, "stop_reminders", work)


def forget(reply: Reply, requester: Requester, token: str | None,
           batch_id: str | None) -> None:
    def work(core: Core) -> messages.Message:
        try:
            result = core.onboarding.forget(requester, token=token, batch_id=batch_id,
                                            is_admin=core.access.is_admin(requester.user_id))
        except AlreadyForgotten:
            return {**linkviews.already_forgotten(), **KEEP_ORIGINAL}
        core.home.refresh(requester)
        return {**messages.forgotten(result), **KEEP_ORIGINAL}

    _perform(reply, "forget", work)


def share_batch(reply: Reply, requester: Requester, batch_id: str) -> None:
    def work(core: Core) -> messages.Message:
        from slack_sdk.errors import SlackApiError

        shared = core.onboarding.share_once(requester, batch_id,
                                            is_admin=core.access.is_admin(requester.user_id))
        if shared is None:  # posted on an earlier click
            return {**linkviews.already_posted(), **KEEP_ORIGINAL}
        batch, links = shared
        post = messages.shared(batch, links, batch.requester)
        if core.onboarding.exotel.sandbox:
            post = messages.sandboxed(post)
        try:
            core.slack.chat_postMessage(channel=batch.requester.channel_id, **post)
        except SlackApiError as error:
            core.onboarding.share_failed(batch_id)
            return {**messages.cannot_post_here(str(error.response.get("error"))),
                    **KEEP_ORIGINAL}
        except Exception:
            core.onboarding.share_failed(batch_id)  # RQ retries it: let that post
            raise
        return {**messages.posted_to_channel(), **KEEP_ORIGINAL}

    _perform(reply, "share_batch", work)


def refresh_home(reply: Reply, viewer: Requester) -> None:
    def work(core: Core) -> None:
        core.home.refresh(viewer)

    _perform(reply, "refresh_home", work)


def respond(reply: Reply, message: messages.Message) -> None:
    """A reply worked out by the listener, sent from here so the ack need not wait for it."""
    _perform(reply, "respond", lambda core: {**message, **KEEP_ORIGINAL})


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
        core.metrics.count("onboard_commands", command=name, outcome="failed")
        message = messages.problem(exc)
    else:
        core.metrics.count("onboard_commands", command=name, outcome="ok")
    # Anything else propagates: RQ retries idempotent jobs, then `on_failure` answers.
    send(core, reply, message)


def _wait_for_budget(core: Core, reply: Reply, wait: BudgetWait, told: bool,
                     job: Callable[..., None], *args: Any) -> messages.Message | None:
    """Queue the command again for when Exotel's budget has room; tell the user once."""
    seconds = wait.seconds
    if reply.requested_at + RESPONSE_URL_LIFE.total_seconds() < time.time() + seconds + 60:
        return messages.problem(wait)
    core.commands.enqueue(job, reply, *args, True, idempotent=False, delay=seconds)
    log.info("%s waits %.0f s for Exotel's request budget", job.__name__, seconds)
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
                      retry_handlers=[ConnectionErrorRetryHandler()]).send_dict(message)
    except Exception:
        log.exception("could not send the reply to Slack")


def on_failure(job: Job, connection: Redis, exc_type: type[BaseException],
               exc: BaseException, tb: TracebackType | None) -> None:
    """RQ calls this when a job raised, timed out, or its worker died (AbandonedJobError)."""
    if job.retries_left:
        return  # RQ runs it again
    reply = job.args[0] if job.args else None
    if not isinstance(reply, Reply) or reply.lapsed():
        log.error("job %s failed for good (%s), with no one left to tell", job.func_name,
                  exc_type.__name__)
        return
    core = current_core()
    core.metrics.count("onboard_commands", command=job.func_name.rsplit(".", 1)[-1],
                       outcome="failed")
    log.error("job %s failed for good: %s", job.func_name, exc_type.__name__)
    message = messages.problem(exc)
    if job.func_name in (f"{__name__}.issue_links", f"{__name__}.renew_batch"):
        message = messages.issued(_account_for(core, job))
    send(core, reply, message)


def _account_for(core: Core, job: Job) -> IssueResult:
    """What an issuing job cut short made, from the batch it was recording."""
    if job.func_name.endswith("issue_links"):
        _, requester, count, note, batch_id, *_ = job.args
    else:  # renew: the count and note are those of the batch renewed
        _, requester, old_batch_id, batch_id, *_ = job.args
        old = core.store.get_batch(old_batch_id)
        made = core.store.get_batch(batch_id)
        source = old or made
        count = len(source.tokens) if source else 0
        note = source.note if source else ""
    return core.onboarding.account_for(requester, count, note, batch_id)
