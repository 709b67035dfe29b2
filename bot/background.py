"""Slow work (Exotel calls) in a child process of its own, on threads there.

Bolt answers Slack from the request's thread; if Exotel work shared that process, its CPU
bursts would hold the GIL while acks wait. So each serving process hands its commands to
one child process, which runs them concurrently and replies through Slack's response URL.

A request's thread only pickles its task and appends it to a list. One hand-over thread
writes what has gathered to a pipe every `HANDOVER_INTERVAL`, a burst's tasks in one write.
Writing from the request's thread cost it more than the rest of its ack under load: the
write lets go of the GIL and must win it back from the busy threads, and waking the child
on a virtual machine is a cross-CPU interrupt. (A `ProcessPoolExecutor` was worse still:
two helper threads woke in the web process for every task.)
The pipe is also how the child learns that its parent is gone: when the web process exits,
however it exits, the child reads end-of-file, finishes the work in hand, and leaves.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
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
# How long a task may wait for the next hand-over: nothing beside Exotel's round trip.
HANDOVER_INTERVAL = 0.005
# Room for a few thousand waiting tasks, so a burst never blocks the hand-over for long.
PIPE_BYTES = 1 << 20
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["bot.background", "bot.core", "bot.tasks"])


class Background:
    """Runs tasks in the child process and sends each task's message to its response URL."""

    def __init__(self, settings: Settings, threads: int = 32) -> None:
        self._settings = settings
        self._threads = threads
        self._lock = threading.Lock()  # guards _pending and _stopping
        self._pending: list[bytes] = []
        self._stopping = False
        self._gathered = threading.Event()  # set when a task arrives with none pending
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
        """Hand `task` to the child; its message (or a polite error) goes to `response_url`."""
        payload = pickle.dumps((response_url, task, args), pickle.HIGHEST_PROTOCOL)
        with self._lock:
            if self._stopping:  # a new child now would outlive the process
                log.error("the bot is stopping; a task handed over too late was dropped")
                return
            self._pending.append(payload)
            first = len(self._pending) == 1
        if first:
            self._gathered.set()

    def _hand_over(self) -> None:
        """The hand-over thread: every HANDOVER_INTERVAL, what has gathered goes to the child."""
        while True:
            self._gathered.wait()
            time.sleep(HANDOVER_INTERVAL)  # let the rest of a burst gather
            with self._lock:
                batch, self._pending = self._pending, []
                self._gathered.clear()
                stopping = self._stopping
            try:
                if batch:
                    self._write(pickle.dumps(batch, pickle.HIGHEST_PROTOCOL))
            except Exception:  # keep handing over later tasks, whatever became of these
                log.exception("%d tasks could not be handed to the work process", len(batch))
            if stopping:
                return

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
        with self._lock:
            self._stopping = True
        self._gathered.set()
        self._handover.join()  # it hands over what is pending, then ends
        if not self._writer.closed:
            self._writer.close()
        if wait:
            self._process.join()


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
