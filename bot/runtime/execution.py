"""How every job runs, and how one that failed for good is accounted for.

Each job gets the command's `Reply` first and answers through it. Delivery is at least
once: every job but issuing is idempotent and RQ retries it; issuing calls Exotel's POST,
which is not, so it is never retried. Its links are recorded one by one as Exotel returns
them, under a batch id chosen at enqueue, and a command cut short (its worker killed) is
accounted for by `on_failure`: what was made is shown, what was not is said.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

from redis import Redis
from rq.job import Job as RQJob
from slack_sdk.errors import SlackApiError

from bot.domain.onboarding import BudgetWait, IssueResult
from bot.engine.queue import Reply, StepExecution
from bot.engine.registry import Job
from bot.runtime.composition import build_core
from bot.settings import load_settings
from bot.slack import messages, surfaces
from bot.slack.blocks import Message
from bot.slack.core import EXPECTED_FAILURES, Core

log = logging.getLogger(__name__)

Work = Callable[[Core], Message | None]

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


def perform(reply: Reply, name: str, work: Work) -> None:
    """Run a command's `work` and send what it answers to the command's response URL."""
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
    core.delivery.reply(reply.url, message)


def wait_for_budget(core: Core, reply: Reply, wait: BudgetWait, told: bool, job: Job,
                    *args: Any) -> Message | None:
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
    core.delivery.reply(reply.url, message)


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


def _cut_short(job: RQJob) -> None:
    """A step or form whose worker died: what it made (tracked, reminded) is handed over."""
    _, requester, count, note, batch_id, last, *_ = job.args
    core = current_core()
    result = core.onboarding.account_for(requester, count, note, batch_id)
    if isinstance(last, StepExecution):
        complete_with(core, last, result)
    else:
        core.delivery.tell(requester.user_id, surfaces.links_dm(result))


def complete_with(core: Core, execution: StepExecution, result: IssueResult) -> None:
    """End a workflow step with its links as outputs, or with why none were made. Links
    the bot could not track are outputs too (they work), and their requester is told."""
    if not result.made:
        finish_step(core, execution, error=messages.issued(result)["text"])
        return
    urls = [link.url for link in result.links] + [link.url for link in result.untracked]
    finish_step(core, execution, outputs={"links": "\n".join(urls), "first_link": urls[0]})
    if result.untracked:
        core.delivery.tell(result.untracked[0].requester.user_id, surfaces.links_dm(result))


def finish_step(core: Core, execution: StepExecution, *, error: str | None = None,
                outputs: dict[str, str] | None = None) -> None:
    outcome = "ok" if error is None else "failed"
    try:
        core.delivery.complete_step(
            execution, outputs=outputs,
            error=None if error is None else surfaces.step_error(error))
    except SlackApiError as failure:
        log.error("could not complete workflow step %s: %s", execution.execution_id,
                  failure.response.get("error"))
        outcome = "failed"
    core.metrics.command("workflow_step", outcome)
