"""Prometheus metrics: counters and a histogram kept by each process, as prometheus_client
keeps them, plus gauges of the job queues read from Redis when Prometheus scrapes.

Each `python -m bot` process (web or worker) counts only what it did; Prometheus sums the
targets (docs/decisions/0009-prometheus-metrics.md). A process with several forks (gunicorn's
web workers, the worker pool) keeps its counts in `PROMETHEUS_MULTIPROC_DIR`, set by
bot.runtime.multiproc before prometheus_client is first imported.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set by bot.runtime.multiproc

# Slack request kinds counted by name; anything else counts as "other" (bounded labels).
SLACK_KINDS = frozenset({"/onboard-link", "/check-token", "block_actions", "view_submission",
                         "view_closed", "shortcut", "message_action", "event_callback",
                         "block_suggestion", "workflow_step_execute"})
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)


_COMMANDS = Counter("onboard_commands", "Commands and button clicks the workers finished, "
                    "by outcome", ["command", "outcome"])
_SLACK_REQUESTS = Counter("onboard_slack_requests", "Requests from Slack this process "
                          "handled, by command or payload type", ["kind"])
_LINKS = Counter("onboard_links_issued", "Onboarding links issued")
_REMINDERS = Counter("onboard_reminders", "Reminders by outcome (sent, late, skipped, failed, "
                     "rate_limited)", ["outcome"])
_EXOTEL = Histogram("onboard_exotel_request_seconds", "Exotel API latency",
                    ["method", "outcome"], buckets=BUCKETS)


class Metrics:
    """What the bot counts, one method each; a counter in memory or in an mmap'd file never
    fails a command."""

    def command(self, name: str, outcome: str) -> None:
        _COMMANDS.labels(command=name, outcome=outcome).inc()

    def slack_request(self, kind: str) -> None:
        _SLACK_REQUESTS.labels(kind=kind if kind in SLACK_KINDS else "other").inc()

    def links_issued(self, count: int) -> None:
        _LINKS.inc(count)

    def reminder(self, outcome: str) -> None:
        _REMINDERS.labels(outcome=outcome).inc()

    def exotel_call(self, method: str, outcome: str, seconds: float) -> None:
        _EXOTEL.labels(method=method, outcome=outcome).observe(seconds)


class QueueCollector(Collector):
    """Jobs by queue and state, and live RQ workers, read from Redis at scrape time; a Redis
    that does not answer shows as onboard_redis_up 0 beside the process's own counts.

    `scheduled_elsewhere`: by queue, a count of what is scheduled outside RQ's registry and
    becomes a job of that queue when due (the reminders' own schedule, which this layer
    does not know)."""

    def __init__(self, queues: list[Queue],
                 scheduled_elsewhere: Mapping[str, Callable[[], int]] | None = None) -> None:
        self.queues = queues
        self.scheduled_elsewhere = dict(scheduled_elsewhere or {})

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("onboard_redis_up", "1 if Redis answered this scrape")
        try:
            jobs = {(q.name, state): count for q in self.queues
                    for state, count in self._jobs_by_state(q).items()}
            workers = Worker.count(connection=self.queues[0].connection)
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        family = GaugeMetricFamily("onboard_queue_jobs", "Jobs by queue and state",
                                   labels=["queue", "state"])
        for (queue, state), count in sorted(jobs.items()):
            family.add_metric([queue, state], count)
        yield family
        yield GaugeMetricFamily("onboard_workers", "RQ workers alive", value=workers)

    def _jobs_by_state(self, queue: Queue) -> dict[str, int]:
        elsewhere = self.scheduled_elsewhere.get(queue.name)
        return {"queued": queue.count,
                "started": StartedJobRegistry(queue=queue).count,
                "scheduled": (ScheduledJobRegistry(queue=queue).count
                              + (elsewhere() if elsewhere else 0)),
                "failed": FailedJobRegistry(queue=queue).count}


class _ThisProcess(Collector):
    """The default registry's metrics: this process's counts, when it has no forks."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def render(queues: Collector | None = None) -> bytes:
    """This process's metrics (all its forks', in multiprocess mode), and the queue gauges."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    else:
        registry.register(_ThisProcess())
    if queues is not None:
        registry.register(queues)
    return generate_latest(registry)


Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def metrics_app(token: str, queues: Collector | None
                ) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    """WSGI: the metrics to requests carrying `Authorization: Bearer <token>`, else 401."""
    expected = f"Bearer {token}".encode()

    def application(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        offered = environ.get("HTTP_AUTHORIZATION", "").encode()
        if not hmac.compare_digest(offered, expected):
            body, status, kind = b"unauthorized\n", "401 Unauthorized", "text/plain"
        else:
            body, status, kind = render(queues), "200 OK", CONTENT_TYPE_LATEST
        start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    return application
