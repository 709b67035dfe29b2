"""How every job runs, and how one that failed for good is accounted for.

Every job is a `logged_job`: when it ends, one line says what it did, for whom and how long
it took (RQ's own lines about it show only at DEBUG). Each job gets the command's `Reply`
first and answers through it. Delivery is at least once: every job but issuing is
idempotent and RQ retries it; issuing calls Exotel's POST, which is not, so it is never
retried. Its links are recorded one by one as Exotel returns them, under a batch id chosen
at enqueue, and a command cut short (its worker killed) is accounted for by `on_failure`:
what was made is shown, what was not is said.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, ParamSpec

from redis import Redis
from rq.job import Job as RQJob
from slack_sdk.errors import SlackApiError

from bot.domain.models import Requester
from bot.domain.onboarding import BudgetWait, IssueResult
from bot.engine.queue import Reply, StepExecution
from bot.engine.registry import Job
from bot.runtime.composition import build_core
from bot.settings import load_settings
from bot.slack import messages, surfaces
from bot.slack.blocks import Message, keeping_original
from bot.slack.core import EXPECTED_FAILURES, Core

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Done:
    """What a job did, in a few words for its log line: counts, statuses, Slack ids, masked
    tokens; never a note. `level`: DEBUG for routine work (a status poll that found
    nothing), WARNING for work it could not do."""

    what: str
    level: int = logging.INFO


class Answer(NamedTuple):
    """What a command's work answers on its response URL (None: nothing), and what it did."""

    message: Message | None
    did: str


Work = Callable[[Core], Answer]
P = ParamSpec("P")


def logged_job(run: Callable[P, Done]) -> Callable[P, str]:
    """The job `run`, saying in one line when it ends what it did, for whom (the Requester
    among its arguments) and how long it took; RQ gets what it did as the job's result."""

    @functools.wraps(run)
    def job(*args: P.args, **kwargs: P.kwargs) -> str:
        started = time.monotonic()
        try:
            done = run(*args, **kwargs)
        except BaseException as error:  # RQ logs the traceback; `on_failure` tells the user
            _say(run.__name__, args, Done(f"raised {type(error).__name__}", logging.WARNING),
                 started)
            raise
        _say(run.__name__, args, done, started)
        return done.what

    return job


def _say(name: str, args: tuple[object, ...], done: Done, started: float) -> None:
    seconds = time.monotonic() - started
    requester = next((arg for arg in args if isinstance(arg, Requester)), None)
    fields: dict[str, object] = {"command": name, "seconds": round(seconds, 3)}
    if requester is not None:
        fields.update(requester.model_dump())  # team_id, user_id, channel_id
    whom = f" for {requester.user_id}" if requester else ""
    log.log(done.level, "%s%s: %s (%.2f s)", name, whom, done.what, seconds, extra=fields)


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


def perform(reply: Reply, name: str, work: Work) -> Done:
    """Run a command's `work` and send what it answers to the command's response URL."""
    if reply.lapsed():
        return Done("dropped: it could not start within 30 minutes of the command, and "
                    "Slack's reply URL has lapsed", logging.WARNING)
    core = current_core()
    try:
        message, did = work(core)
    except EXPECTED_FAILURES as exc:  # news for the user, not a bug
        core.metrics.command(name, "failed")
        message, done = messages.problem(exc), Done(f"failed: {exc}", logging.WARNING)
    else:
        core.metrics.command(name, "ok")
        done = Done(did)
    # Anything else propagates: RQ retries idempotent jobs, then `on_failure` answers.
    answer(core, reply, message)
    return done


def answer(core: Core, reply: Reply, message: Message | None) -> None:
    """`message` on the reply's response URL; beside the message clicked, if it says so."""
    if message is not None and reply.keep_original:
        message = keeping_original(message)
    core.delivery.reply(reply.url, message)


def issued(result: IssueResult) -> str:
    """What issuing did, for the job's line: counts and failure reasons (no note)."""
    failures = "".join(f", {count} failed: {reason}" for reason, count in result.reasons())
    untracked = f", {len(result.untracked)} of them not tracked" if result.untracked else ""
    return f"{result.made} of {result.requested} links issued{untracked}{failures}"


def wait_for_budget(core: Core, reply: Reply, wait: BudgetWait, told: bool, job: Job,
                    *args: Any, job_kwargs: Mapping[str, Any] | None = None) -> Answer:
    """Queue the command again (`job_kwargs`: its arguments by name, kept) for when Exotel's
    budget has room; tell the user once."""
    seconds = wait.seconds
    if reply.lapsed(after=seconds + 60):
        requester = args[0]
        core.onboarding.refused(requester, "issue" if job is Job.ISSUE_LINKS else "renew",
                                str(wait), outcome="rate-limited")
        return Answer(messages.problem(wait), "refused: Exotel's budget has no room in time")
    core.commands.enqueue(job, reply, *args, True, idempotent=False, delay=seconds,
                          job_kwargs=job_kwargs)
    did = f"waits {seconds:.0f} s for Exotel's request budget"
    if told:
        return Answer(None, did)
    return Answer(messages.budget_wait(wait.count, core.settings.exotel_rate_per_minute,
                                       seconds), did)


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
    answer(core, reply, message)


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


def complete_with(core: Core, execution: StepExecution, result: IssueResult) -> str:
    """End a workflow step with its links as outputs, or with why none were made. Links
    the bot could not track are outputs too (they work), and their requester is told."""
    if not result.made:
        return finish_step(core, execution, error=messages.issued(result)["text"])
    urls = [link.url for link in result.links] + [link.url for link in result.untracked]
    outcome = finish_step(core, execution,
                          outputs={"links": "\n".join(urls), "first_link": urls[0]})
    if result.untracked:
        core.delivery.tell(result.untracked[0].requester.user_id, surfaces.links_dm(result))
    return outcome


def finish_step(core: Core, execution: StepExecution, *, error: str | None = None,
                outputs: dict[str, str] | None = None) -> str:
    """Complete or fail the step; what was done, for the job's line (no error text: it
    may quote the note)."""
    outcome = "ok" if error is None else "failed"
    did = "step completed" if error is None else "step ended with an error"
    try:
        core.delivery.complete_step(
            execution, outputs=outputs,
            error=None if error is None else surfaces.step_error(error))
    except SlackApiError as failure:
        log.error("could not complete workflow step %s: %s", execution.execution_id,
                  failure.response.get("error"))
        outcome, did = "failed", "step not completed"
    core.metrics.command("workflow_step", outcome)
    return did
