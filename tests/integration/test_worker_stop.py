"""A stop signal that reaches a worker before RQ's own handlers are in is not lost."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import pytest
from rq import Queue

from bot.engine.registry import COMMANDS_QUEUE
from bot.runtime import worker
from bot.slack.core import Core


@pytest.fixture
def stop_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    worker._stop_requested.clear()


def test_a_sigterm_while_the_worker_starts_stops_it_before_any_job(
    make_core: Callable[..., Core], redis_client, stop_handlers: None
) -> None:
    core = make_core()
    worker._leave_on_stop_signals()  # as a pool worker has, until RQ installs its own
    os.kill(os.getpid(), signal.SIGTERM)  # e.g. while RQ forks the scheduler
    Queue(COMMANDS_QUEUE, connection=redis_client).enqueue("builtins.print", "not run")

    rq_worker = worker.build_worker(core)
    rq_worker.work(with_scheduler=False)  # not burst: without the stop it would never return

    assert rq_worker._shutdown_requested_date is not None
    assert Queue(COMMANDS_QUEUE, connection=redis_client).count == 1  # no job taken


def test_a_sigterm_while_redis_is_down_ends_the_outage_wait(stop_handlers: None) -> None:
    worker._leave_on_stop_signals()
    os.kill(os.getpid(), signal.SIGTERM)
    worker._sleep_unless_stopped(600)  # returns at once: the stop was recorded
    assert worker._stop_requested.is_set()
