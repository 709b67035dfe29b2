"""The one way tests and the benchmark wait for what another thread or process does."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL = 0.02  # seconds between looks: short, since replies are waited for all through the suite


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition` until it is true, or fail saying `what` did not happen: the one
    way tests wait for something another thread or process does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(POLL)
    raise AssertionError(f"not within {timeout} s: {what}")
