"""Handing a listener's work to the job engine, then acknowledging: the one way every
listener does it. If Redis will not take the work, the acknowledgement says so."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, Respond

from bot.domain.store import StoreUnavailable
from bot.engine.queue import Reply
from bot.engine.registry import Job
from bot.slack import messages
from bot.slack.core import Core


def enqueue_then_ack(core: Core, ack: Ack, job: Job, response_url: str | None,
                     *args: Any, ack_with: messages.Message | None = None,
                     idempotent: bool = True, respond: Respond | None = None) -> None:
    """`job` on a worker, then the ack (`ack_with`, for a command).

    A command's ack can carry the bad news; a button's cannot, so for buttons (`respond`
    given) it goes to the response URL instead."""
    try:
        core.commands.enqueue(job, Reply.to(response_url), *args, idempotent=idempotent)
    except StoreUnavailable as error:
        problem = messages.problem(error)
        if respond is None:
            ack(**problem)
        else:
            ack()
            respond(**problem, replace_original=False)
        return
    if ack_with is None:
        ack()
    else:
        ack(**ack_with)


def enqueue_or_tell(core: Core, job: Job, response_url: str | None,
                    *args: Any, then: Callable[[], object],
                    tell: Callable[[messages.Message], object],
                    idempotent: bool = True) -> None:
    """`job` on a worker, then `then()` (the ack); if Redis will not take it, `tell(problem)`
    instead: for surfaces whose ack is not a message (modals, workflow steps, events)."""
    try:
        core.commands.enqueue(job, Reply.to(response_url), *args, idempotent=idempotent)
    except StoreUnavailable as error:
        tell(messages.problem(error))
        return
    then()
