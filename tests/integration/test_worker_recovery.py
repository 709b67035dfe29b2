"""What a worker took is never lost, and the scheduler's locks pass to another host.

Against the real Redis of the suite: a worker's take is RQ's own dequeue (BLMOVE into the
queue's intermediate list), and its death is simply not going on from there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import JobStatus
from rq.registry import ScheduledJobRegistry

from bot.domain.reminders import DUE_KEY, job_id
from bot.engine.queue import Reply
from bot.engine.registry import (
    COMMANDS_QUEUE,
    QUEUES,
    REMINDERS_QUEUE,
    SCHEDULER_LOCK,
    STATUS_QUEUE,
    Job,
)
from bot.runtime import scheduler as scheduling
from bot.runtime import worker
from bot.runtime.scheduler import Scheduler
from bot.slack.core import Core
from testkit.slack import FakeSlack
from tests.blockkit import block_text
from tests.support import REP


def take(queue: Queue) -> str:
    """A worker's take, as RQ's one-queue worker does it; then the worker dies."""
    taken = Queue.dequeue_any([queue], None, connection=queue.connection)
    assert taken is not None
    return taken[0].id


def abandoned(core: Core, slack: FakeSlack, name: str) -> tuple[str, Scheduler, Clock]:
    """A command a worker took and then died with; and a scheduler on a clock of the test's."""
    core.commands.enqueue(Job.ISSUE_LINKS, Reply.to(slack.response_url(name)), REP, 1,
                          "ACME", f"batch-{name}", idempotent=False)
    clock = Clock()
    return take(core.commands.queue), Scheduler(core.queues, core.commands.queue.connection,
                                                clock=clock), clock


def test_a_command_a_dead_worker_took_but_never_started_is_queued_again_and_answered(
    make_core: Callable[..., Core], redis_client: redis.Redis, slack: FakeSlack,
) -> None:
    core = make_core()
    queue = core.commands.queue
    job_id, keeper, clock = abandoned(core, slack, "orphan")
    assert queue.count == 0  # gone from the queue: only the intermediate list has it

    # Through `maintain`, as the pool runs it: every queue in turn (a pass over the
    # reminders queue once forgot when the commands queue's job was first seen).
    assert len(core.queues) > 1
    assert keeper.maintain() == []  # first seen now: a live worker starts it
    clock.now += 5
    assert keeper.maintain() == []  # still within the grace a live one has
    clock.now += 6
    assert keeper.maintain() == [job_id]
    assert queue.get_job_ids() == [job_id]
    assert IntermediateQueue(queue.key, redis_client).get_job_ids() == []

    worker.drain(core)
    assert "1 WhatsApp onboarding link" in block_text(slack.wait_for_replies("orphan")[0])


def test_a_job_that_started_is_left_to_rqs_registries_not_run_again(
    make_core: Callable[..., Core], redis_client: redis.Redis, slack: FakeSlack,
) -> None:
    core = make_core()
    queue = core.commands.queue
    job_id, keeper, clock = abandoned(core, slack, "started")
    job = queue.fetch_job(job_id)
    assert job is not None
    job.set_status(JobStatus.STARTED)  # it ran: the started registry accounts for it
    keeper.maintain()
    clock.now += 60
    assert keeper.maintain() == []
    assert queue.count == 0
    assert IntermediateQueue(queue.key, redis_client).get_job_ids() == []


def test_a_pools_workers_each_take_one_queue_commands_by_the_setting() -> None:
    assert worker.staffing(4) == {COMMANDS_QUEUE: 4, REMINDERS_QUEUE: 1, STATUS_QUEUE: 1}
    assert list(worker.staffing(1)) == list(QUEUES)  # every queue has a worker


def test_the_pool_starts_each_worker_on_the_queue_short_of_its_share(
    make_core: Callable[..., Core],
) -> None:
    core = make_core(WORKER_PROCESSES="2")
    pool = worker.Pool(core.settings, core)
    started = []
    for name in "abcd":
        queue = pool._short_of()
        pool._queue_of[name] = queue
        started.append(queue)
    assert sorted(started) == sorted([COMMANDS_QUEUE, COMMANDS_QUEUE, REMINDERS_QUEUE,
                                      STATUS_QUEUE])
    del pool._queue_of["c"]  # a worker died: its replacement takes what it took
    assert pool._short_of() == started[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_host_schedules_and_another_takes_over_once_the_lock_lapses(
    make_core: Callable[..., Core], redis_client: redis.Redis,
) -> None:
    core = make_core()
    connection = core.commands.queue.connection
    first_clock, second_clock = Clock(), Clock()
    sources = [core.reminders.release_due]
    first = Scheduler(core.queues, connection, sources, clock=first_clock)
    second = Scheduler(core.queues, connection, sources, clock=second_clock)
    first.tick()
    second.tick()
    assert first.holding and not second.holding
    assert 0 < redis_client.ttl(SCHEDULER_LOCK) <= scheduling.LOCK_SECONDS

    # A job and a reminder due now are moved by the holder only.
    due = core.reminders.queue
    due.enqueue_at(datetime.now(UTC) - timedelta(seconds=1), "builtins.print", "due",
                   job_id="due-reminder")
    redis_client.zadd(DUE_KEY, {"0batch": datetime.now(UTC).timestamp() - 1})
    second.tick()
    assert due.count == 0
    first.tick()
    assert due.get_job_ids() == ["due-reminder", job_id("0batch")]
    assert redis_client.zcard(DUE_KEY) == 0

    # The first host dies: its lock lapses (here: is gone), and the second takes it at its
    # next renewal, not before.
    redis_client.delete(SCHEDULER_LOCK)
    second_clock.now += scheduling.RENEW_SECONDS - 1
    second.tick()
    assert not second.holding
    second_clock.now += 1
    second.tick()
    assert second.holding
    assert str(redis_client.get(SCHEDULER_LOCK)).split(":")[1] == str(os.getpid())

    second.release()  # a graceful stop hands it over at once
    assert redis_client.get(SCHEDULER_LOCK) is None
    assert ScheduledJobRegistry(queue=due).count == 0


def test_the_scheduler_rides_out_redis_being_down(make_core: Callable[..., Core]) -> None:
    core = make_core()
    down = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    scheduler = Scheduler(core.queues, down)
    scheduler.tick()  # says so in the log, raises nothing
    assert not scheduler.holding
