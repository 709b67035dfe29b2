"""The Workflow Builder step `create_onboarding_links`: links for the workflow's user."""

from __future__ import annotations

from logging import Logger
from typing import Any

from slack_bolt import Ack, App, BoltContext, Fail

from bot.engine.queue import StepExecution, new_batch_id
from bot.engine.registry import Job
from bot.slack import surfaces
from bot.slack.core import Core
from bot.slack.inputs import (
    OPAQUE_ID,
    UnreadablePayload,
    UsageError,
    count_of,
    matches,
    note_of,
    ref_of,
    requester_from,
)
from handlers.enqueue import enqueue_or_tell

NO_USER = ("The step needs to know who ran the workflow: set its Requester input to "
           "“Person who used this workflow”.")


def create_links(ack: Ack, inputs: dict[str, Any], body: dict[str, Any],
                 context: BoltContext, fail: Fail, logger: Logger) -> None:
    execution_id = matches(OPAQUE_ID, context.function_execution_id)
    token = context.function_bot_access_token
    if execution_id is None or not token:
        logger.warning("function_executed without an execution id or token: ignored")
        ack()
        return
    core: Core = context["core"]
    execution = StepExecution(execution_id, token)
    try:
        requester = requester_from(body, user=inputs.get("user_id"),
                                   channel=inputs.get("channel_id"))
        count = count_of(inputs.get("count"))
        note = note_of(inputs.get("customer_note"))
        customer_ref = ref_of(inputs.get("customer_ref"))
    except UnreadablePayload:
        _end_with(core, ack, fail, execution, surfaces.step_error(NO_USER))
        return
    except UsageError as problem:
        _end_with(core, ack, fail, execution, surfaces.step_error(str(problem)))
        return
    decision = core.access.may_issue(requester.user_id, requester.channel_id)
    if not decision.allowed:
        core.onboarding.refused(requester, "workflow", decision.reason)
        _end_with(core, ack, fail, execution, surfaces.step_refused(decision.reason))
        return
    enqueue_or_tell(core, Job.RUN_WORKFLOW_STEP, None, requester, count, note,
                    new_batch_id(), execution, idempotent=False, then=ack,
                    tell=lambda problem: _fail_now(ack, fail, problem["text"]),
                    job_kwargs={"customer_ref": customer_ref})


def _end_with(core: Core, ack: Ack, fail: Fail, execution: StepExecution,
              error: str) -> None:
    """The step fails with `error`, from a job (functions.completeError is a Slack call)."""
    enqueue_or_tell(core, Job.FAIL_WORKFLOW_STEP, None, execution, error, then=ack,
                    tell=lambda problem: _fail_now(ack, fail, problem["text"]))


def _fail_now(ack: Ack, fail: Fail, text: str) -> None:
    """Redis is down, so no job can end the step: end it from here (one quick call)."""
    ack()
    fail(surfaces.step_error(text))


def register(app: App) -> None:
    app.function(surfaces.WORKFLOW_STEP)(create_links)
