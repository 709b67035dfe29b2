"""Slow work (Exotel calls) in a child process of its own, on threads there.

Bolt answers Slack from the request's thread; if Exotel work shared that process, its CPU
bursts would hold the GIL while acks wait. So each serving process hands its commands to
one child process, which runs them concurrently and replies through Slack's response URL.

A request's thread only appends its task to a deque. One hand-over thread pickles what has
gathered and writes it to a pipe once commands pause (`HANDOVER_LULL`), a burst's tasks in
one write. Writing from the request's thread cost it more than the rest of its ack under
load: the write lets go of the GIL and must win it back from the busy threads, and waking
the child on a virtual machine is a cross-CPU interrupt. (A `ProcessPoolExecutor` was worse
still: two helper threads woke in the web process for every task.) Waiting for the pause
keeps the child's work, and the Redis, Exotel and Slack traffic it makes, off the CPU while
a burst's acks are still going out: even at SCHED_IDLE it slowed them by a quarter.
The pipe is also how the child learns that its parent is gone: when the web process exits,
however it exits, the child reads end-of-file, finishes the work in hand, and leaves.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from bot import logs, messages
from bot.core import EXPECTED_FAILURES, Core, build_core
from bot.settings import Settings

log = logging.getLogger(__name__)

# fn(core, *args) -> a Slack message or None; a module-level function (pickled by name).
Task = Callable[..., messages.Message | None]

# When CPU is short, the OS should serve acks (which Slack times) before this work; the
# work itself waits on Exotel and Slack far longer than it computes, so it loses little.
BACKGROUND_NICENESS = 19  # where SCHED_IDLE is not to be had
# Tasks are handed over once no command has come for HANDOVER_LULL: a burst's work starts
# when its acks are out. The pause must outlast the stalls of a busy web process (a few of
# the GIL's 5 ms switch intervals): at 10 ms, one stall in a benchmark round let the work in
# early and that round's ack p99 rose from about 20 ms to 74 ms. Under a flood with no
# pause, every HANDOVER_MAX (about one Exotel round trip), so no task waits longer.
HANDOVER_LULL = 0.025
HANDOVER_MAX = 0.5
# Room for a few thousand waiting tasks, so a burst never blocks the hand-over for long.
PIPE_BYTES = 1 << 20
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["bot.background", "bot.core", "bot.tasks"])


class Background:
    """Runs tasks in the child process and sends each task's message to its response URL."""

    def __init__(self, settings: Settings, threads: int = 32, lull: float = HANDOVER_LULL,
                 max_wait: float = HANDOVER_MAX) -> None:
        self._settings = settings
        self._threads = threads
        self._lull, self._max_wait = lull, max_wait
        # Request threads append here and the hand-over thread takes from here, each with a
        # deque's thread-safe append and popleft: no lock for request threads to queue on.
        self._pending: deque[tuple[str | None, Task, tuple[Any, ...]]] = deque()
        self._last_arrival = 0.0  # time.monotonic() of the newest pending task
        self._stopping = False
        self._closed = False  # set by the hand-over thread just before its last drain
        self._gathered = threading.Event()  # set when a task arrives with the deque drained
        self._writer, self._process = self._start_child()
        self._handover = threading.Thread(target=self._hand_over, name="onboard-handover",
                                          daemon=True)
        self._handover.start()
        atexit.register(self.shutdown)  # let the child finish what it was given

    def _start_child(self) -> tuple[Connection, multiprocessing.process.BaseProcess]:
        reader, writer = _context.Pipe(duplex=False)
        process = _context.Process(target=_child_main, name="onboard-work",
                                   args=(reader, self._settings, self._threads))
        process.start()
        reader.close()  # the child's copy is the only reader: end-of-file there means "no more"
        _widen(writer)
        return writer, process

    def submit(self, response_url: str | None, task: Task, *args: Any) -> None:
        """Hand `task` to the child; its message (or a polite error) goes to `response_url`.

        `task` and `args` are pickled later, by the hand-over thread, not on the ack's time."""
        item = (response_url, task, args)
        self._pending.append(item)
        self._last_arrival = time.monotonic()
        if self._closed:  # the last hand-over may have been and gone without this task
            with contextlib.suppress(ValueError):  # ValueError: it went with the rest
                self._pending.remove(item)
                # Not handed over: a new child now would outlive the process.
                log.error("the bot is stopping; a task handed over too late was dropped")
            return
        if not self._gathered.is_set():  # after the append: see _hand_over
            self._gathered.set()

    def _hand_over(self) -> None:
        """The hand-over thread: once commands pause, what has gathered goes to the child."""
        while True:
            self._gathered.wait()
            self._await_lull()
            stopping = self._stopping
            # Cleared before draining: a task appended after the drain finds it clear and
            # sets it again, so none is left behind. On the way out, `_closed` is set before
            # the last drain for the same reason: a later task finds it set and is dropped,
            # with a log line, not left unsaid in the deque.
            self._gathered.clear()
            self._closed = stopping
            batch = self._drain()
            payloads = [payload for task in batch if (payload := _pickled(task))]
            try:
                if payloads:
                    self._write(pickle.dumps(payloads, pickle.HIGHEST_PROTOCOL))
            except Exception:  # keep handing over later tasks, whatever became of these
                log.exception("%d tasks could not be handed to the work process", len(batch))
            if stopping:
                return

    def _drain(self) -> list[tuple[str | None, Task, tuple[Any, ...]]]:
        batch = []
        with contextlib.suppress(IndexError):  # empty (a late task may take itself back)
            while True:
                batch.append(self._pending.popleft())
        return batch

    def _await_lull(self) -> None:
        """Sleep until no task has come for `lull`, or `max_wait` has passed, or we stop."""
        latest = time.monotonic() + self._max_wait
        while not self._stopping:
            wait = min(self._last_arrival + self._lull, latest) - time.monotonic()
            if wait <= 0:
                return
            time.sleep(wait)

    def _write(self, message: bytes) -> None:
        try:
            self._writer.send_bytes(message)
        except OSError:  # the child died (broken pipe); a new one takes these tasks on
            log.error("the work process died; starting a new one")
            self._writer.close()
            self._writer, self._process = self._start_child()
            self._writer.send_bytes(message)

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking work; with `wait`, until every task handed over has replied."""
        self._stopping = True  # at exit, when no request is in hand (gunicorn's, atexit's)
        self._gathered.set()
        self._handover.join()  # it hands over what is pending, then ends
        if not self._writer.closed:
            self._writer.close()
        if wait:
            self._process.join()


def _pickled(task: tuple[str | None, Task, tuple[Any, ...]]) -> bytes | None:
    """One task's payload, alone, so that one that won't pickle spoils no other."""
    try:
        return pickle.dumps(task, pickle.HIGHEST_PROTOCOL)
    except Exception:
        log.exception("a task could not be handed to the work process: %s", task[1])
        return None


def _widen(writer: Connection) -> None:
    try:
        import fcntl

        fcntl.fcntl(writer.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):  # not Linux, or over the system's cap
        log.debug("pipe left at its default size")


# What follows runs in the child process.

def _child_main(reader: Connection, settings: Settings, threads: int) -> None:
    # Stopping is the parent's call, made by closing the pipe: a signal sent to the whole
    # process group (Ctrl-C, a platform's SIGTERM) must not cut replies off half-way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _yield_cpu_to_acks()
    logs.configure(settings.log_level, settings.secrets(), settings.log_format)
    core = build_core(settings)
    with ThreadPoolExecutor(threads, thread_name_prefix="onboard-work") as pool:
        while True:
            try:
                batch = pickle.loads(reader.recv_bytes())
            except EOFError:  # the web process has stopped or died; finish what is in hand
                break
            for payload in batch:
                response_url, task, args = pickle.loads(payload)
                pool.submit(perform, core, response_url, task, args)


def _yield_cpu_to_acks() -> None:
    """Run this process, and the threads it starts, only on CPU that acks don't want.

    Under Linux's SCHED_IDLE a waking normal thread (a request's) takes the CPU from this
    work at once; mere niceness lets a running low-priority thread finish its slice first,
    which showed as milliseconds in the ack's tail. Where that policy is missing, nice 19."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(BACKGROUND_NICENESS)


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
