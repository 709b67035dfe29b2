"""Handing a listener's work to the job engine, then acknowledging: the one way every
listener does it. If Redis will not take the work, the acknowledgement says so."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from slack_bolt import Ack

from bot.domain.store import StoreUnavailable
from bot.engine.queue import Reply
from bot.engine.registry import Job
from bot.slack import messages
from bot.slack.blocks import Message, keeping_original
from bot.slack.core import Core


def enqueue_then_ack(core: Core, ack: Ack, job: Job, response_url: str | None,
                     *args: Any, ack_with: Message | None = None,
                     idempotent: bool = True, button: bool = False,
                     keep_original: bool = False,
                     job_kwargs: Mapping[str, Any] | None = None) -> None:
    """`job` on a worker (`job_kwargs`: its arguments by name), then the ack (`ack_with`,
    for a command). `keep_original`: the job's answers come beside the message clicked,
    whatever the job answers (`Reply.keep_original`).

    A command's ack can carry the bad news; a button's cannot, so for buttons it goes to
    the response URL instead, beside the message clicked."""
    try:
        core.commands.enqueue(job, Reply.to(response_url, keep_original=keep_original),
                              *args, idempotent=idempotent, job_kwargs=job_kwargs)
    except StoreUnavailable as error:
        problem = messages.problem(error)
        if not button:
            ack(**problem)
            return
        ack()
        core.delivery.reply(response_url, keeping_original(problem))
        return
    if ack_with is None:
        ack()
    else:
        ack(**ack_with)


def enqueue_or_tell(core: Core, job: Job, response_url: str | None,
                    *args: Any, then: Callable[[], object],
                    tell: Callable[[Message], object],
                    idempotent: bool = True,
                    job_kwargs: Mapping[str, Any] | None = None) -> None:
    """`job` on a worker, then `then()` (the ack); if Redis will not take it, `tell(problem)`
    instead: for surfaces whose ack is not a message (modals, workflow steps, events)."""
    try:
        core.commands.enqueue(job, Reply.to(response_url), *args, idempotent=idempotent,
                              job_kwargs=job_kwargs)
    except StoreUnavailable as error:
        tell(messages.problem(error))
        return
    then()
