"""The worker: RQ workers, each taking jobs from one queue, and the host's scheduler.

`python -m bot worker` runs a pool (RQ's `WorkerPool`) of `WORKER_PROCESSES` workers
taking commands, one taking reminders and one taking status polls: a worker on one queue
takes each job with Redis's BLMOVE into the queue's intermediate list, so a job a worker
took and never started is still in Redis when that worker dies, and is queued again
(decision 0018). The pool's own loop also runs the scheduler (bot.runtime.scheduler).
More pools, on any host, share the same queues.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
import uuid
from multiprocessing import get_context
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from redis import ConnectionPool
from rq import SimpleWorker
from rq.connections import parse_connection
from rq.job import Job as RQJob
from rq.utils import now
from rq.worker_pool import WorkerData, WorkerPool

from bot.engine.registry import COMMANDS_QUEUE, queue_names
from bot.runtime import jobs  # noqa: F401  # imported before the forks, so they share it
from bot.runtime.composition import build_core
from bot.runtime.execution import use_core
from bot.runtime.lifetime import die_with_parent
from bot.runtime.scheduler import DueSource, Scheduler
from bot.runtime.web import metrics_endpoint
from bot.settings import Settings
from bot.slack.core import Core
from bot.slack.poller import start_polling
from bot.telemetry import logs

log = logging.getLogger(__name__)

# An idle worker wakes from its dequeue every WORKER_TTL - 15 s to renew its registration,
# a write to Redis each time: rare, since it no longer runs maintenance then (the pool's
# scheduler does, every 10 s: bot.runtime.scheduler). A dead worker stays listed by
# `python -m bot jobs` for up to this long; its job is accounted for much sooner.
WORKER_TTL = 120
OUTAGE_BACKOFF_MAX = 30.0
# A running job's entry in RQ's started registry lapses this long after its timeout (RQ: 60
# s), and a dead worker's job is then accounted for. The timeout itself stops a live job
# (SIGALRM, once any blocking call of at most Exotel's timeout has returned).
JOB_MARGIN = 15


def staffing(command_workers: int, webhooks: bool = False) -> dict[str, int]:
    """How many workers of a pool take each queue: commands never wait behind a reminder
    or a status poll, and a long status round never delays a reminder. Webhook deliveries
    get a worker of their own only while WEBHOOK_URLS is set (no process otherwise), so a
    receiver that is slow or down delays nothing else."""
    return {queue: command_workers if queue == COMMANDS_QUEUE else 1
            for queue in queue_names(webhooks)}


# SIGTERM or SIGINT before RQ's own handlers are in (starting, or waiting out an outage).
_stop_requested = threading.Event()


class Worker(SimpleWorker):
    """RQ's SimpleWorker (jobs run in this process, whose connections they reuse) on one
    queue."""

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        # A stop that came before now is kept, so the worker stops before its first job.
        if _stop_requested.is_set():
            self._stop_requested = True
            self._shutdown_requested_date = now()

    def get_heartbeat_ttl(self, job: RQJob) -> int:
        if job.timeout is None or job.timeout < 0:
            return super().get_heartbeat_ttl(job)
        return int(job.timeout) + JOB_MARGIN

    def clean_registries(self) -> None:
        """None here: the pool's scheduler keeps the registries, once for all workers."""
        self.last_cleaned_at = now()  # type: ignore[assignment]  # RQ declares it None


def build_worker(core: Core, queue_name: str = COMMANDS_QUEUE) -> Worker:
    # A connection of its own: RQ raises its socket timeout to outlast a blocking dequeue,
    # and the jobs' Redis calls keep the core's short one.
    connection_class, pool_class, pool_kwargs = parse_connection(core.commands.queue.connection)
    connection = connection_class(connection_pool=ConnectionPool(connection_class=pool_class,
                                                                 **pool_kwargs))
    return Worker([queue_name], connection=connection, worker_ttl=WORKER_TTL,
                  maintenance_interval=WORKER_TTL)


def due_sources(core: Core) -> list[DueSource]:
    """What the scheduler turns into jobs when due, besides RQ's scheduled jobs: the
    reminders, and the managers' digest while DIGEST_CHANNEL is set."""
    return [core.reminders.release_due] + ([core.digests.release_due] if core.digests else [])


def drain(core: Core, logging_level: str = "WARNING") -> None:
    """Move what is due and run every queued job, here and now, as the pool's scheduler and
    workers would (tests and benchmarks; the loop ends when every queue is empty)."""
    scheduler = Scheduler(core.queues, core.commands.queue.connection, due_sources(core),
                          logging_level=logging_level)
    scheduler.tick()
    scheduler.release()
    while any(queue.count for queue in core.queues):
        for queue in core.queues:
            build_worker(core, queue.name).work(burst=True, with_scheduler=False,
                                                logging_level=logging_level)


def serve(core: Core, queue_name: str, logging_level: str) -> None:
    """Work until asked to stop, riding out Redis outages: one log line each, then retries
    with backoff until Redis is back."""
    use_core(core)
    # Every worker joins (or begins) the one chain of status polls; see bot.slack.poller.
    start_polling(core.poller.queue, core.settings.status_poll_seconds)
    delay = 1.0
    down_since: float | None = None
    while not _stop_requested.is_set():
        worker = build_worker(core, queue_name)
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
            worker.work(with_scheduler=False, logging_level=logging_level)
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
    """RQ's WorkerPool, each worker on the queue `staffing` is short of, built by `serve`
    with the bot's settings and core; its loop runs the host's scheduler too."""

    def __init__(self, settings: Settings, core: Core) -> None:
        self.staff = staffing(settings.worker_processes, bool(settings.webhook_urls))
        super().__init__(list(self.staff), connection=core.commands.queue.connection,
                         num_workers=sum(self.staff.values()))
        logs.quiet_libraries(settings.log_level)  # RQ's constructor set its logger to INFO
        self._settings = settings
        self._queue_of: dict[str, str] = {}  # worker name -> the queue it takes
        self._logging_level = logs.library_level(settings.log_level)
        self.scheduler = Scheduler(core.queues, core.commands.queue.connection,
                                   due_sources(core), logging_level=self._logging_level)

    def start(self, burst: bool = False, logging_level: str | None = None) -> None:
        """RQ's loop; `logging_level` is that of RQ's loggers (the settings' by default)."""
        self._logging_level = logging_level or self._logging_level
        try:
            super().start(burst=burst, logging_level=self._logging_level)
        finally:
            self.scheduler.release()

    def start_worker(self, count: int | None = None, burst: bool = True, _sleep: float = 0,
                     logging_level: str = "INFO") -> None:
        queue = self._short_of()
        name = uuid.uuid4().hex
        process = get_context("fork").Process(
            target=_pool_worker, args=(self._settings, os.getpid(), queue, self._logging_level),
            name=f"onboard-worker {queue} {name}")
        process.start()
        assert process.pid is not None
        self.worker_dict[name] = WorkerData(name=name, pid=process.pid, process=process)
        self._queue_of[name] = queue

    def handle_dead_worker(self, worker_data: WorkerData) -> None:
        super().handle_dead_worker(worker_data)  # RQ says so at INFO, shown only at DEBUG
        queue = self._queue_of.pop(worker_data.name, None)
        if self.status != self.Status.STOPPED and not self._burst:  # not a stop, nor done
            log.warning("a worker on %s (pid %d) died; starting another", queue,
                        worker_data.pid)

    def check_workers(self, respawn: bool = True) -> None:
        """RQ's pool calls this about once a second while it runs."""
        super().check_workers(respawn)
        self.scheduler.tick()

    def _short_of(self) -> str:
        staffed = {queue: 0 for queue in self.staff}
        for queue in self._queue_of.values():
            staffed[queue] += 1
        return max(self.staff, key=lambda queue: self.staff[queue] - staffed[queue])


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


def _pool_worker(settings: Settings, parent: int, queue_name: str, logging_level: str) -> None:
    _leave_on_stop_signals()  # until RQ installs its own: a stop while starting is no crash
    die_with_parent(signal.SIGTERM, parent)  # a pool killed outright takes its workers along
    logs.configure(settings.log_level, settings.secrets(), settings.log_format)
    serve(build_core(settings), queue_name, logging_level)


def run(settings: Settings) -> None:
    """`python -m bot worker`: the pool, until SIGTERM."""
    core = build_core(settings)
    if settings.worker_metrics_port:
        serve_metrics(core, settings.worker_metrics_port)
    core.groups.warm(settings.allowed_usergroup_ids)  # membership ready for the acks
    pool = Pool(settings, core)
    log.info("worker: %s", ", ".join(f"{count} on {queue}" for queue, count
                                     in pool.staff.items()))
    gc.freeze()  # the workers fork from here: keep the collector off the pages they share
    pool.start()
