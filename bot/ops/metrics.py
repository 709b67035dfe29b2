"""Counters in Redis, shown at /metrics in Prometheus' text format.

The bot's work happens in several processes, often on several hosts (web and workers), so
counts are kept in one Redis hash rather than in process memory, and the web process reads
them back when Prometheus scrapes it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

log = logging.getLogger(__name__)

KEY = "onboard:metrics"
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
COUNTERS = {
    "onboard_commands": ("Commands and button clicks by outcome", ["command", "outcome"]),
    "onboard_links_issued": ("Onboarding links issued", []),
    "onboard_reminders": ("Reminders by outcome (sent, late, skipped, failed)", ["outcome"]),
}
EXOTEL = ("onboard_exotel_request_seconds", "Exotel API latency", ["method", "outcome"])


def _field(name: str, labels: dict[str, str], suffix: str = "") -> str:
    return "|".join([name + suffix, *(f"{k}={v}" for k, v in sorted(labels.items()))])


class Metrics:
    """Increments that never fail a command: a metrics hiccup is logged and dropped."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def count(self, name: str, amount: int = 1, **labels: str) -> None:
        try:
            self.redis.hincrby(KEY, _field(name, labels), amount)
        except redis.RedisError:
            log.debug("metric %s not counted", name)

    def exotel_call(self, method: str, outcome: str, seconds: float) -> None:
        labels = {"method": method, "outcome": outcome}
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for bound in [b for b in BUCKETS if seconds <= b]:
                    pipe.hincrby(KEY, _field(EXOTEL[0], {**labels, "le": str(bound)}, "_bucket"))
                pipe.hincrby(KEY, _field(EXOTEL[0], labels, "_count"))
                pipe.hincrbyfloat(KEY, _field(EXOTEL[0], labels, "_sum"), seconds)
                pipe.execute()
        except redis.RedisError:
            log.debug("exotel latency not recorded")


class _RedisCollector(Collector):
    def __init__(self, client: redis.Redis, queue: Queue) -> None:
        self.redis = client
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        raw = {str(k): float(v) for k, v in self.redis.hgetall(KEY).items()}
        yield from self._counters(raw)
        yield self._histogram(raw)
        jobs = GaugeMetricFamily("onboard_jobs", "Reminder jobs by state", labels=["state"])
        jobs.add_metric(["scheduled"], ScheduledJobRegistry(queue=self.queue).count)
        jobs.add_metric(["queued"], self.queue.count)
        jobs.add_metric(["failed"], FailedJobRegistry(queue=self.queue).count)
        yield jobs

    def _counters(self, raw: dict[str, float]) -> Iterator[Metric]:
        for name, (doc, label_names) in COUNTERS.items():
            family = CounterMetricFamily(name, doc, labels=label_names)
            if not label_names:
                family.add_metric([], raw.get(name, 0.0))
            for field, value in raw.items():
                parts = field.split("|")
                if parts[0] == name and label_names:
                    labels = dict(p.split("=", 1) for p in parts[1:])
                    family.add_metric([labels.get(n, "") for n in label_names], value)
            yield family

    def _histogram(self, raw: dict[str, float]) -> Metric:
        name, doc, label_names = EXOTEL
        series: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
        for field, value in raw.items():
            parts = field.split("|")
            if not parts[0].startswith(name):
                continue
            labels = dict(p.split("=", 1) for p in parts[1:])
            key = tuple(labels.get(n, "") for n in label_names)
            suffix = parts[0][len(name):]
            series[key][labels.get("le", "") if suffix == "_bucket" else suffix] = value
        family = HistogramMetricFamily(name, doc, labels=label_names)
        for key, values in series.items():
            buckets = [(str(b), values.get(str(b), 0.0)) for b in BUCKETS]
            buckets.append(("+Inf", values.get("_count", 0.0)))
            family.add_metric(list(key), buckets, values.get("_sum", 0.0))
        return family


def render(client: redis.Redis, queue: Queue) -> bytes:
    registry = CollectorRegistry()
    registry.register(_RedisCollector(client, queue))
    return generate_latest(registry)
