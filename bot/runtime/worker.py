"""The worker: RQ workers for the commands queue first and the reminders queue second.

`python -m bot worker` runs `WORKER_PROCESSES` of them (RQ's `WorkerPool`); one at a time
also runs RQ's scheduler, which moves due reminders and delayed commands onto their
queues. More worker processes, on any host, share the same queues.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from rq import SimpleWorker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.scheduler import RQScheduler
from rq.utils import now
from rq.worker_pool import WorkerPool

from bot.runtime.composition import build_core
from bot.runtime.execution import use_core
from bot.runtime.lifetime import die_with_parent
from bot.runtime.web import metrics_endpoint
from bot.settings import Settings
from bot.slack.core import Core
from bot.slack.poller import start_polling
from bot.telemetry import logs

log = logging.getLogger(__name__)

# An idle worker wakes from its dequeue every WORKER_TTL - 15 s and then runs RQ's
# maintenance: finding jobs of dead workers and taking over a lapsed scheduler lock.
# RQ's defaults (420 s, 10 min) left a dead worker's jobs unnoticed for minutes.
WORKER_TTL = 25
MAINTENANCE_SECONDS = 10
OUTAGE_BACKOFF_MAX = 30.0


class _Scheduler(RQScheduler):
    """RQ's scheduler, in the process RQ forks for it, ending when its worker ends: an
    orphan would hold the scheduler lock with no worker beside it."""

    def work(self) -> None:
        die_with_parent(signal.SIGTERM)
        super().work()

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        # The worker stops its scheduler with SIGTERM and waits for it. One sent right after
        # the fork reached the handler the worker had then (which only records it): kept.
        if _stop_requested.is_set():
            self._stop_requested = True


# SIGTERM or SIGINT before RQ's own handlers are in (starting, or waiting out an outage).
_stop_requested = threading.Event()


class Worker(SimpleWorker):
    """RQ's SimpleWorker (jobs run in this process, whose connections they reuse), with a
    scheduler that dies with it."""

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        # RQ forks the scheduler before it installs its handlers: a stop that came before
        # now (or during that fork) is kept, so the worker stops before its first job.
        if _stop_requested.is_set():
            self._stop_requested = True
            self._shutdown_requested_date = now()

    def _start_scheduler(self, burst: bool = False, logging_level: str | None = "INFO",
                         date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
                         log_format: str = DEFAULT_LOGGING_FORMAT) -> None:
        # RQ's own method, but for the scheduler's class (RQ has no setting for it).
        self.scheduler = _Scheduler(self.queues, connection=self.connection,
                                    logging_level=logging_level or self.log.level,
                                    date_format=date_format, log_format=log_format,
                                    serializer=self.serializer)
        self.scheduler.acquire_locks()
        if not self.scheduler.acquired_locks:
            return
        if not burst:
            self.scheduler.start()
            return
        try:
            self.scheduler.register_birth()
            self.scheduler.enqueue_scheduled_jobs()
        finally:
            self.scheduler.release_locks()
            self.scheduler.register_death()


def build_worker(core: Core) -> Worker:
    return Worker(core.queues, connection=core.commands.queue.connection, worker_ttl=WORKER_TTL,
                  maintenance_interval=MAINTENANCE_SECONDS)


def serve(core: Core, logging_level: str) -> None:
    """Work until asked to stop, riding out Redis outages: one log line each, then retries
    with backoff until Redis is back."""
    use_core(core)
    # Every worker joins (or begins) the one chain of status polls; see bot.slack.poller.
    start_polling(core.poller.queue, core.settings.status_poll_seconds)
    delay = 1.0
    down_since: float | None = None
    while not _stop_requested.is_set():
        worker = build_worker(core)
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
            worker.work(with_scheduler=True, logging_level=logging_level)
        if worker._shutdown_requested_date is not None:  # SIGTERM/SIGINT; the job in hand ran
            return
        if down_since is None:
            down_since = time.monotonic()
            log.error("Redis is not answering; the worker retries until it is back")
        _sleep_unless_stopped(delay)
        delay = min(delay * 2, OUTAGE_BACKOFF_MAX)
        if _redis_answers(core):
            log.warning("Redis is back after %.0f s; the worker carries on",
                        time.monotonic() - down_since)
            down_since, delay = None, 1.0


def _redis_answers(core: Core) -> bool:
    try:
        return bool(core.commands.queue.connection.ping())
    except redis.RedisError:
        return False


def _sleep_unless_stopped(seconds: float) -> None:
    _leave_on_stop_signals()
    _stop_requested.wait(seconds)


def _leave_on_stop_signals() -> None:
    def record(*_: Any) -> None:
        # Record, not exit: a handler can run inside an at-fork hook, where CPython drops
        # the SystemExit it raises (and with it the stop).
        _stop_requested.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, record)


class Pool(WorkerPool):
    """RQ's WorkerPool, its workers built by `serve` with the bot's settings and core."""

    def __init__(self, settings: Settings, core: Core) -> None:
        super().__init__([queue.name for queue in core.queues],
                         connection=core.commands.queue.connection,
                         num_workers=settings.worker_processes)
        self._settings = settings

    def get_worker_process(self, name: str, burst: bool, _sleep: float = 0,
                           logging_level: str = "INFO") -> BaseProcess:
        import os

        return get_context("fork").Process(
            target=_pool_worker, args=(self._settings, os.getpid(), logging_level),
            name=f"onboard-worker {name}")


def serve_metrics(core: Core, port: int) -> None:
    """The pool's /metrics (every worker process's counts) on a thread of the pool's process:
    Prometheus scrapes each worker host as it scrapes each web process."""
    application = metrics_endpoint(core)
    assert application is not None  # the settings require METRICS_TOKEN with the port
    server = make_server("0.0.0.0", port, application, server_class=_MetricsServer,
                         handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("worker metrics on http://0.0.0.0:%d/metrics", port)


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: scrapes are routine."""


def _pool_worker(settings: Settings, parent: int, logging_level: str) -> None:
    _leave_on_stop_signals()  # until RQ installs its own: a stop while starting is no crash
    die_with_parent(signal.SIGTERM, parent)  # a pool killed outright takes its workers along
    logs.configure(settings.log_level, settings.secrets(), settings.log_format)
    serve(build_core(settings), logging_level)


def run(settings: Settings) -> None:
    """`python -m bot worker`: the pool, until SIGTERM."""
    core = build_core(settings)
    if settings.worker_metrics_port:
        serve_metrics(core, settings.worker_metrics_port)
    core.groups.warm(settings.allowed_usergroup_ids)  # membership ready for the acks
    log.info("worker: %d processes on queues %s, %s", settings.worker_processes,
             core.commands.queue.name, core.reminders.queue.name)
    Pool(settings, core).start(logging_level=settings.log_level.upper())
