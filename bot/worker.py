"""The reminder worker: an RQ worker with its scheduler, and the core its jobs use."""

from __future__ import annotations

import logging

from rq import SimpleWorker

from bot.core import Core, build_core
from bot.settings import Settings, load_settings

log = logging.getLogger(__name__)

# How often a worker cleans RQ's registries (finding jobs of killed workers, to retry them)
# and tries for the scheduler lock a stopped replica held. RQ's default is 10 minutes.
MAINTENANCE_SECONDS = 30

_core: Core | None = None


def use_core(core: Core) -> None:
    """Jobs in this process use `core` (tests, and the worker at start)."""
    global _core
    _core = core


def current_core() -> Core:
    global _core
    if _core is None:
        _core = build_core(load_settings())
    return _core


def build_worker(core: Core) -> SimpleWorker:
    # SimpleWorker runs jobs in this process: reminders are short, and forking per job
    # would rebuild every connection each time.
    return SimpleWorker([core.reminders.queue], connection=core.reminders.queue.connection,
                        maintenance_interval=MAINTENANCE_SECONDS)


def run(settings: Settings) -> None:
    """Work until SIGTERM; at most one replica's scheduler moves due reminders at a time."""
    core = build_core(settings)
    use_core(core)
    log.info("reminder worker started on queue %s", core.reminders.queue.name)
    build_worker(core).work(with_scheduler=True, logging_level=settings.log_level.upper())
