"""Who did what: an append-only Redis stream, trimmed to the retention period.

Entries hold Slack ids and masked tokens only, never a full token; and, for what concerns
a batch, the customer's CRM reference (empty when it has none), never the customer note.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from redis import Redis

from bot.domain.store import now, redis_errors

STREAM = "onboard:audit"
# Appended, not inserted: exports read by column position keep their columns.
FIELDS = ["at", "action", "outcome", "team_id", "user_id", "channel_id", "batch_id", "count",
          "tokens", "detail", "customer_ref"]


class Audit:
    def __init__(self, client: Redis, retention: timedelta) -> None:
        self.redis = client
        self.retention = retention

    def record(self, action: str, *, team_id: str = "", user_id: str = "", channel_id: str = "",
               outcome: str = "ok", batch_id: str = "", count: int | None = None,
               tokens: Iterable[str] = (), detail: str = "", customer_ref: str = "") -> None:
        """Append one entry; `tokens` must already be masked. Every entry has every field
        (`customer_ref` empty too), so that Redis stores the names once per stream node."""
        moment = now()
        entry: dict[Any, Any] = {"at": moment.isoformat(), "action": action, "outcome": outcome,
                 "team_id": team_id, "user_id": user_id, "channel_id": channel_id,
                 "batch_id": batch_id, "count": "" if count is None else str(count),
                 "tokens": ",".join(tokens), "detail": detail, "customer_ref": customer_ref}
        oldest = int((moment - self.retention).timestamp() * 1000)
        with redis_errors(), self.redis.pipeline(transaction=False) as pipe:
            # MINID trims whatever is older than the retention period, as it goes (in whole
            # nodes of ~100 entries: "approximate"); a trail nobody adds to goes altogether.
            pipe.xadd(STREAM, entry, minid=f"{oldest}-0", approximate=True)
            pipe.expire(STREAM, self.retention)
            pipe.execute()

    def entries(self, since: datetime | None = None) -> Iterator[dict[str, str]]:
        start = "-" if since is None else f"{int(since.timestamp() * 1000)}-0"
        with redis_errors():
            for _, fields in self.redis.xrange(STREAM, min=start) or []:
                yield {str(k): str(v) for k, v in (fields or {}).items()}


def export(entries: Iterable[dict[str, str]], fmt: str) -> str:
    """The entries as CSV (with a header) or JSON lines."""
    if fmt == "jsonl":
        return "".join(json.dumps(entry) + "\n" for entry in entries)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(entries)
    return out.getvalue()


def parse_since(text: str) -> datetime:
    """A date (2026-11-01) or a date and time; naive values are UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
