"""What a worker took is never lost, and the scheduler's locks pass to another host.

Against the real Redis of the suite: a worker's take is RQ's own dequeue (BLMOVE into the
queue's intermediate list), and its death is simply not going on from there.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis
from freezegun.api import FrozenDateTimeFactory
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import JobStatus
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler

from bot.engine.queue import Reply
from bot.engine.registry import COMMANDS_QUEUE, QUEUES, REMINDERS_QUEUE, STATUS_QUEUE, Job
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


def issue_command(core: Core, slack: FakeSlack, name: str) -> None:
    core.commands.enqueue(Job.ISSUE_LINKS, Reply.to(slack.response_url(name)), REP, 1,
                          "ACME", f"batch-{name}", idempotent=False)


def test_a_command_a_dead_worker_took_but_never_started_is_queued_again_and_answered(
    make_core: Callable[..., Core], redis_client: redis.Redis, slack: FakeSlack,
    clock: FrozenDateTimeFactory,
) -> None:
    core = make_core()
    queue = core.commands.queue
    issue_command(core, slack, "orphan")
    job_id = take(queue)
    assert queue.count == 0  # gone from the queue: only the intermediate list has it

    assert worker.requeue_untaken(queue) == []  # first seen now: a live worker starts it
    clock.tick(5)
    assert worker.requeue_untaken(queue) == []  # still within the grace a live one has
    clock.tick(6)
    assert worker.requeue_untaken(queue) == [job_id]
    assert queue.get_job_ids() == [job_id]
    assert IntermediateQueue(queue.key, redis_client).get_job_ids() == []

    worker.drain(core)
    assert "1 WhatsApp onboarding link" in block_text(slack.wait_for_replies("orphan")[0])


def test_a_job_that_started_is_left_to_rqs_registries_not_run_again(
    make_core: Callable[..., Core], redis_client: redis.Redis, slack: FakeSlack,
    clock: FrozenDateTimeFactory,
) -> None:
    core = make_core()
    queue = core.commands.queue
    issue_command(core, slack, "started")
    job_id = take(queue)
    job = queue.fetch_job(job_id)
    assert job is not None
    job.set_status(JobStatus.STARTED)  # it ran: the started registry accounts for it
    worker.requeue_untaken(queue)
    clock.tick(60)
    assert worker.requeue_untaken(queue) == []
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


def lock_owners(client: redis.Redis) -> set[bytes | None]:
    return {client.get(RQScheduler.get_locking_key(name)) for name in QUEUES}


def test_one_host_schedules_and_another_takes_over_once_its_locks_lapse(
    make_core: Callable[..., Core], redis_client: redis.Redis,
) -> None:
    core = make_core()
    connection = core.commands.queue.connection
    first_clock, second_clock = Clock(), Clock()
    first = Scheduler(core.queues, connection, clock=first_clock)
    second = Scheduler(core.queues, connection, clock=second_clock)
    first.tick()
    second.tick()
    assert first.held == set(QUEUES) and second.held == set()
    ttls = [redis_client.ttl(RQScheduler.get_locking_key(name)) for name in QUEUES]
    assert all(0 < ttl <= scheduling.LOCK_SECONDS for ttl in ttls), ttls

    # A reminder due now is moved by the holder only.
    due = core.reminders.queue
    due.enqueue_at(datetime.now(UTC) - timedelta(seconds=1), "builtins.print", "due",
                   job_id="due-reminder")
    second.tick()
    assert due.count == 0
    first.tick()
    assert due.get_job_ids() == ["due-reminder"]

    # The first host dies: its locks lapse (here: are gone), and the second takes them at
    # its next renewal, not before.
    for name in QUEUES:
        redis_client.delete(RQScheduler.get_locking_key(name))
    second_clock.now += scheduling.RENEW_SECONDS - 1
    second.tick()
    assert second.held == set()
    second_clock.now += 1
    second.tick()
    assert second.held == set(QUEUES)
    owners = lock_owners(redis_client)
    assert len(owners) == 1 and None not in owners

    second.release()  # a graceful stop hands them over at once
    assert lock_owners(redis_client) == {None}
    assert ScheduledJobRegistry(queue=due).count == 0


def test_the_scheduler_rides_out_redis_being_down(make_core: Callable[..., Core]) -> None:
    core = make_core()
    down = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    scheduler = Scheduler(core.queues, down)
    scheduler.tick()  # says so in the log, raises nothing
    assert scheduler.held == set()
