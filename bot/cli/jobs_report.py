"""`python -m bot jobs`: the bot's RQ queues, their registries and workers, in its own Redis."""

from __future__ import annotations

import sys
from typing import TextIO

import redis
from redis import Redis
from rq import Queue, Worker

from bot.domain.reminders import scheduled_count
from bot.domain.store import connect_for
from bot.engine.registry import QUEUES, REMINDERS_QUEUE, SCHEDULER_LOCK
from bot.settings import Settings
from bot.telemetry.logs import safe_url


def report(connection: Redis, where: str, out: TextIO) -> None:
    """One line per queue (the bot's own always, any other RQ knows of), then the workers."""
    known = (q.name for q in Queue.all(connection=connection))
    names = sorted({*QUEUES, *known})
    print(f"Redis: {where}", file=out)
    for name in names:
        queue = Queue(name, connection=connection)
        elsewhere = _scheduled_elsewhere(connection, name)
        counts = {
            "queued": queue.count,
            "scheduled": queue.scheduled_job_registry.count + elsewhere,
            "started": queue.started_job_registry.count,
            "deferred": queue.deferred_job_registry.count,
            "failed": queue.failed_job_registry.count,
            "finished": queue.finished_job_registry.count,
            # Moved to a worker, not started yet: for an instant, or its worker died (then
            # queued again within about 20 s).
            "taken": len(queue.intermediate_queue.get_job_ids()),
        }
        print(f"queue {name}: " + ", ".join(f"{n} {k}" for k, n in counts.items()), file=out)
    holder = _text(connection.get(SCHEDULER_LOCK))
    print(f"scheduler: {holder} (host:pid:id)" if holder else
          "scheduler: none running (due jobs wait until a worker pool starts)", file=out)
    workers = Worker.all(connection=connection)
    print(f"workers: {len(workers)}", file=out)
    for worker in sorted(workers, key=lambda w: w.name):
        print(f"  {worker.name} ({worker.get_state()}) on {', '.join(worker.queue_names())}",
              file=out)


def _scheduled_elsewhere(connection: Redis, queue_name: str) -> int:
    """Scheduled reminders wait in their own sorted set, not in RQ's registry."""
    return scheduled_count(connection) if queue_name == REMINDERS_QUEUE else 0


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def run(settings: Settings) -> int:
    assert settings.redis_url is not None
    try:
        report(connect_for(settings, decode_responses=False), safe_url(settings.redis_url),
               sys.stdout)
    except redis.RedisError as error:
        print(f"Redis is not answering ({error}): check REDIS_URL.", file=sys.stderr)
        return 1
    return 0
