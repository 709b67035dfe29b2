"""The ack's enqueue: what a worker needs of RQ's `Queue.enqueue`, and nothing more, in one
transaction (decision 0022)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import redis
from rq import Queue
from rq.job import Job as RQJob
from rq.job import JobStatus

from bot.engine.queue import UNSTARTED_TTL, Reply
from bot.engine.registry import Job
from bot.slack.core import Core
from tests.support import REP

CONNECTING = {"HELLO", "CLIENT", "SELECT", "PING"}  # connections set up, health checks


def commands_sent(client: redis.Redis, act: Callable[[], None]) -> list[str]:
    """The Redis commands (names only) the server saw while `act` ran."""
    seen: list[str] = []
    with client.monitor() as monitor:
        def listen() -> None:
            for command in monitor.listen():
                seen.append(command["command"].split(" ", 1)[0].upper())
                if seen[-1] == "ECHO" and "MARK" in command["command"]:
                    return

        listening = threading.Thread(target=listen, daemon=True)
        listening.start()
        act()
        client.echo("MARK")  # the end of what `act` sent
        listening.join(10)
    assert seen[-1:] == ["ECHO"], seen
    return [name for name in seen[:-1] if name not in CONNECTING]


def test_an_enqueue_writes_the_job_its_expiry_and_its_place_in_the_queue_only(
    make_core: Callable[..., Core], redis_client: redis.Redis,
) -> None:
    core = make_core()
    queue: Queue = core.commands.queue

    def enqueue() -> None:
        core.commands.enqueue(Job.CHECK_TOKEN, Reply.to(None), REP, "token")

    first = commands_sent(redis_client, enqueue)
    again = commands_sent(redis_client, enqueue)
    # The first of a process also lists the queue in RQ's set of queues (`rq info` reads it).
    assert first == ["MULTI", "SADD", "HSET", "EXPIRE", "RPUSH", "EXEC"], first
    assert again == ["MULTI", "HSET", "EXPIRE", "RPUSH", "EXEC"], again
    assert redis_client.smembers(Queue.redis_queues_keys) == {queue.key}

    [_, second_id] = queue.job_ids
    job = RQJob.fetch(second_id, connection=queue.connection)
    assert job.get_status() == JobStatus.QUEUED
    assert job.origin == queue.name and job.enqueued_at is not None
    assert job.func_name == Job.CHECK_TOKEN.value and job.args[1:] == (REP, "token")
    assert job.retries_left == 3 and job.timeout == 30 and job.result_ttl == 0
    assert 0 < redis_client.ttl(job.key) <= UNSTARTED_TTL.total_seconds()
