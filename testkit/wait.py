"""The one way tests and the benchmark wait for what another thread or process does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

POLL = 0.02  # seconds between looks: short, since replies are waited for all through the suite

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str, *,
               every: float = POLL, fail: bool = True) -> T:
    """Poll `condition` until it is true, and return what it returned; or fail saying `what`
    did not happen: the one way tests wait for something another thread or process does.

    `every`: seconds between looks. `fail=False`: at the deadline, return the condition's
    last (false) answer instead of failing, for a caller that reports what came in time."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found or time.monotonic() >= deadline:
            break
        time.sleep(every)
    if found or not fail:
        return found
    raise AssertionError(f"not within {timeout} s: {what}")
