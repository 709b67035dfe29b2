"""The old home of what listeners hand jobs, kept for jobs already in Redis.

RQ pickles a job's arguments, and a `Reply`, `StepExecution` or `UnfurlTarget` pickled before
they moved to `bot.engine.queue` names this module. Commands wait at most two hours unstarted
and failed jobs are kept a day, so delete this module after REMOVE_AFTER
(tests/unit/test_registry.py fails from then on to say so).
"""

from datetime import date

from bot.engine.queue import Reply, StepExecution, UnfurlTarget

REMOVE_AFTER = date(2026, 12, 10)

__all__ = ["REMOVE_AFTER", "Reply", "StepExecution", "UnfurlTarget"]
