"""The stand-in reminder job: records how late RQ ran it, and posts nothing to Slack.

Scheduled instead of `bot.runtime.jobs.send_reminder`, so the reminder benchmark measures
RQ's scheduler and workers (the engine), not Exotel or Slack.
"""

from __future__ import annotations

import time

from rq import get_current_job

LATENESS_KEY = "bench:lateness"


def record_lateness(due: float) -> None:
    """Append "<seconds late> <when it ran>" (both Unix time) to LATENESS_KEY."""
    ran = time.time()
    job = get_current_job()
    assert job is not None, "record_lateness runs only as an RQ job"
    job.connection.rpush(LATENESS_KEY, f"{ran - due:.6f} {ran:.6f}")


# The name RQ stores and its workers import: what the benchmark schedules.
RECORD_LATENESS = f"{record_lateness.__module__}.{record_lateness.__qualname__}"
