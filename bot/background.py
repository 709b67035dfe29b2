"""Slow work (Exotel calls) in a child process of its own, on threads there.

Bolt answers Slack from the request's thread; if Exotel work shared that process, its CPU
bursts would hold the GIL while acks wait. So each serving process hands its commands to
one child process, which runs them concurrently and replies through Slack's response URL.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from bot import logs, messages
from bot.core import EXPECTED_FAILURES, Core, build_core
from bot.settings import Settings

log = logging.getLogger(__name__)

# fn(core, *args) -> a Slack message or None; a module-level function (pickled by name).
Task = Callable[..., messages.Message | None]

BACKGROUND_NICENESS = 10
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["bot.background", "bot.core", "bot.tasks"])


class Background:
    """Runs tasks in the child process and sends each task's message to its response URL."""

    def __init__(self, settings: Settings, threads: int = 32) -> None:
        self._settings = settings
        self._threads = threads
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(max_workers=1, mp_context=_context, initializer=_start_child,
                                   initargs=(self._settings, self._threads))
        pool.submit(_ready).result()  # start the child now, not inside the first ack
        return pool

    def submit(self, response_url: str | None, task: Task, *args: Any) -> None:
        """Hand `task` to the child; its message (or a polite error) goes to `response_url`."""
        try:
            self._pool.submit(_dispatch, response_url, task, args)
        except BrokenProcessPool:
            log.error("the work process died; starting a new one")
            with self._lock:
                self._pool = self._new_pool()
            self._pool.submit(_dispatch, response_url, task, args)

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking work; with `wait`, until every task handed over has replied."""
        self._pool.shutdown(wait=wait)


# What follows runs in the child process.
_threads: ThreadPoolExecutor | None = None
_core: Core | None = None


def _start_child(settings: Settings, threads: int) -> None:
    global _threads, _core
    # When CPU is short, the OS should serve acks (which Slack times) before this work.
    os.nice(BACKGROUND_NICENESS)
    logs.configure(settings.log_level, settings.secrets(), settings.log_format)
    _core = build_core(settings)
    _threads = ThreadPoolExecutor(threads, thread_name_prefix="onboard-work")


def _ready() -> None:
    pass


def _dispatch(response_url: str | None, task: Task, args: tuple[Any, ...]) -> None:
    assert _threads is not None
    _threads.submit(perform, _core, response_url, task, args)


def perform(core: Core, response_url: str | None, task: Task, args: tuple[Any, ...]) -> None:
    """Run one task and send its message, or a polite account of its failure, to Slack."""
    try:
        message = task(core, *args)
        core.metrics.count("onboard_commands", command=task.__name__, outcome="ok")
    except Exception as exc:  # whatever fails after the ack must still reach the user
        core.metrics.count("onboard_commands", command=task.__name__, outcome="failed")
        if isinstance(exc, EXPECTED_FAILURES):
            log.warning("request failed: %s", exc)
        else:
            log.exception("background work failed")
        message = messages.problem(exc)
    if response_url is None or message is None:
        return
    if core.onboarding.exotel.sandbox:
        message = messages.sandboxed(message)
    try:
        WebhookClient(response_url, retry_handlers=[ConnectionErrorRetryHandler()]).send_dict(
            message)
    except Exception:
        log.exception("could not send the reply to Slack")
