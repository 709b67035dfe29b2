"""Child processes that end with their parent, however the parent ends (even SIGKILL)."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Have Linux send `sig` to this process when its parent dies.

    `parent`: the pid the caller expects as its parent; if it is already gone (it died
    before this call), `sig` comes at once. Elsewhere than Linux this does nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)
