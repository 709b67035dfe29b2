"""`python -m bot audit`: the audit log as CSV or JSON lines, from the bot's own Redis."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

from bot.domain.audit import Audit, export
from bot.domain.store import StoreUnavailable, connect_for
from bot.settings import Settings


def run(settings: Settings, since: datetime | None, fmt: str) -> int:
    audit = Audit(connect_for(settings), timedelta(days=settings.audit_retention_days))
    try:
        sys.stdout.write(export(audit.entries(since), fmt))
    except StoreUnavailable:
        print("Redis is not answering: check REDIS_URL.", file=sys.stderr)
        return 1
    return 0
