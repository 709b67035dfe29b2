"""The oldest name of the reminder job, kept for reminders already scheduled in Redis.

Reminders scheduled before the job moved (first to `bot.jobs`, then to `bot.runtime.jobs`) name
`bot.reminders.send_reminder`; RQ resolves it here. Delete with `bot/jobs.py`
(docs/decisions/0008-layer-packages.md).
"""
from bot.runtime.jobs import send_reminder

__all__ = ["send_reminder"]
