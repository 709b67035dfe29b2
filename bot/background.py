"""Slow work (Exotel calls) on threads of its own, so Slack's acks never wait behind it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)


class Background:
    """A bounded pool for the work a command does after it has been acknowledged.

    Bolt runs ack functions (and lazy listeners) on its own listener pool; keeping
    Exotel's seconds-long calls off that pool is what lets every ack go out at once.
    """

    def __init__(self, workers: int = 32) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onboard-work")

    def submit(self, work: Callable[[], None], on_error: Callable[[Exception], None]) -> Future:
        """Run `work`; if it raises, log it and tell the user through `on_error`."""

        def run() -> None:
            try:
                work()
            except Exception as exc:  # an exception after the ack must still reach the user
                log.exception("background work failed")
                try:
                    on_error(exc)
                except Exception:
                    log.exception("could not report the failure to the user")

        return self._pool.submit(run)

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking work; with `wait`, let what is running finish (queued work is dropped)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
