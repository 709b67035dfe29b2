"""Where a process with forks keeps its metrics: prometheus_client's multiprocess mode.

gunicorn's web workers and the worker pool's processes are forks; each writes its counts to
files in `PROMETHEUS_MULTIPROC_DIR`, and whichever of them is scraped reads them all. The
variable must be set before prometheus_client is first imported, as it picks its value store
then: `python -m bot` calls `use_multiprocess_dir` before importing the bot's processes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_dir() -> None:
    """A fresh directory for this process and its children, removed at its exit; or the one
    the environment names (a `python -m bot` parent's, or an operator's, who empties it)."""
    if os.environ.get(ENV):
        return
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR "
                           "was set: each fork would count on its own")
    path = tempfile.mkdtemp(prefix="onboard-metrics-")
    os.environ[ENV] = path
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not in a fork that exits first
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
