"""The commands queue: where a listener puts a command's work before it acknowledges.

Workers (`bot.runtime.worker`) take the jobs off it; `bot.runtime.jobs` holds what they run.
This side takes jobs by name (`bot.engine.registry.Job`) and holds what listeners hand them,
but imports none: the listeners and the web process depend on this contract, never on the
worker's code.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis
from rq import Callback, Queue, Retry
from rq.job import Job as RQJob
from rq.utils import now

from bot.domain.recording import RECORD_MARGIN
from bot.domain.store import StoreUnavailable
from bot.engine.registry import ON_FAILURE as ON_FAILURE_NAME
from bot.engine.registry import Job

# Slack's response URL takes up to 5 replies within 30 minutes of the command; a job that
# could only start after that has no one to answer, so it stops with a log line.
RESPONSE_URL_LIFE = timedelta(minutes=30)
# RQ drops a job never started after this; it outlasts RESPONSE_URL_LIFE so that a worker
# coming back finds the job and logs that it expired, rather than it vanishing unsaid.
UNSTARTED_TTL = timedelta(hours=2)
KEEP_FAILED = timedelta(days=1)  # failed jobs stay this long for `rq info` and the operator
# Idempotent work (check, list, forget, stop, share, home) is tried again; issuing never is.
RETRY = Retry(max=3, interval=[5, 15, 45])
SHORT_JOB_SECONDS = 30
ON_FAILURE = Callback(ON_FAILURE_NAME)


def new_batch_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class StepExecution:
    """One run of the workflow step, to be completed with the just-in-time token Slack sent
    with it (it may complete that execution and nothing else). Never logged."""

    execution_id: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class UnfurlTarget:
    """Where chat.unfurl attaches previews: a posted message, or one being composed."""

    channel: str
    ts: str
    unfurl_id: str = ""
    source: str = ""


@dataclass(frozen=True)
class Reply:
    """Where a job's answer goes: the command's response URL, and when it was asked.
    `keep_original`: every answer comes beside the message whose button was clicked,
    which stays as it was (a button on a channel post: the digest's Renew). A Reply
    pickled before it existed reads the default."""

    url: str | None
    requested_at: float  # time.time() of the ack
    keep_original: bool = False

    @classmethod
    def to(cls, url: str | None, *, keep_original: bool = False) -> Reply:
        return cls(url, time.time(), keep_original)

    def lapsed(self, after: float = 0.0) -> bool:
        """Whether the response URL is past its life (or will be `after` seconds from now)."""
        return time.time() + after > self.requested_at + RESPONSE_URL_LIFE.total_seconds()


class CommandQueue:
    """The web side's one handle on the job engine."""

    def __init__(self, queue: Queue, exotel_deadline: float) -> None:
        self.queue = queue
        # Issuing may take Exotel's whole deadline and the margin after it that recording is
        # tried for while Redis does not answer, then remind and reply.
        self._issue_seconds = int(exotel_deadline + RECORD_MARGIN) + 25
        self._listed = False  # whether this process has put the queue in RQ's set of queues

    def enqueue(self, job: Job, reply: Reply, *args: Any, idempotent: bool = True,
                delay: float = 0.0, job_kwargs: Mapping[str, Any] | None = None) -> None:
        """`job(reply, *args, **job_kwargs)` on a worker; StoreUnavailable if Redis would not
        take it. Arguments added to a job after a release go in `job_kwargs`, with a
        default in the job: jobs queued before it still run."""
        name = job.short_name
        options: dict[str, Any] = {
            "timeout": SHORT_JOB_SECONDS if idempotent else self._issue_seconds,
            "ttl": int(UNSTARTED_TTL.total_seconds()),
            "result_ttl": 0,  # nothing reads results: the reply went to Slack
            "failure_ttl": int(KEEP_FAILED.total_seconds()),
            "retry": RETRY if idempotent else None,
            "on_failure": ON_FAILURE,
            "description": name,
            # Not RQ's default uuid4: that has an onboarding token's shape, which logs mask.
            "job_id": f"{name}-{uuid.uuid4().hex}",
        }
        # Given apart from RQ's options, so that no argument of a job is taken for one.
        call: dict[str, Any] = {"args": (reply, *args), "kwargs": dict(job_kwargs or {})}
        try:
            # RQ takes a dotted name (a plain str, pickled with the job).
            target = job.value
            if delay > 0:
                options["job_timeout"] = options.pop("timeout")
                self.queue.enqueue_in(timedelta(seconds=delay), target, **call, **options)
                return
            self._put(self.queue.create_job(target, **call, **options))
        except redis.RedisError:
            raise StoreUnavailable("Redis is not answering") from None

    def _put(self, job: RQJob) -> None:
        """What a worker needs of RQ's `Queue.enqueue`, in one transaction on the ack's path:
        the job's hash (status `queued` in it), its expiry, its id on the queue (docs/
        decisions/0022). RQ's own adds a second write of the status, expiries of two keys a
        job without dependencies never has, and the queue's entry in RQ's set of queues on
        every call: here that is once a process."""
        job.enqueued_at = now()
        with self.queue.connection.pipeline() as pipe:
            if not self._listed:
                pipe.sadd(self.queue.redis_queues_keys, self.queue.key)
            job.save(pipeline=pipe)
            assert job.ttl is not None
            pipe.expire(job.key, job.ttl)
            self.queue.push_job_id(job.id, pipeline=pipe)
            pipe.execute()
        self._listed = True
