"""What became of each link issued, kept AUDIT_RETENTION_DAYS: for `/onboard-link report`
(and the managers' digest). No Slack here.

The tracked link itself lapses after its 24 hours and the reminder window; this record is
what outlives it: who asked, for which customer (note and CRM reference), the token's last
four characters (never the token, never the link), and its status with when it turned USED.
Written by `StatusBook`, the one place a status changes, when a link is issued and when it
first turns USED or EXPIRED. Bounded per link: the note and reference are cut to their input
limits, and every key lapses AUDIT_RETENTION_DAYS after its last write; the team's index is
trimmed to the retention as it is written.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from redis import Redis

from bot.domain.models import TrackedLink
from bot.domain.store import (
    HISTORY_INDEX,
    HISTORY_LINK,
    HISTORY_USED,
    iso,
    link_id,
    now,
    redis_errors,
)
from bot.settings import LINK_TTL

# What a record keeps of the customer: the Slack side's input limits (MAX_NOTE, MAX_REF).
KEPT_NOTE = 500
KEPT_REF = 200
MAX_READ = 5000  # links read for one report, newest first: the CSV's bound
READ_CHUNK = 500  # hashes fetched in one round trip
CSV_FIELDS = ["issued_at", "requested_by", "customer_note", "customer_ref", "token_last4",
              "status", "used_at", "expires_at"]
# A cell starting with one of these is a formula to a spreadsheet (CSV injection): quoted.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

# Sets fields of an existing record only, keeping its TTL: a record that lapsed (or never
# was) stays gone, so no key is ever left without one.
_UPDATE = """
local raw = redis.call('get', KEYS[1])
if not raw then return 0 end
local record = cjson.decode(raw)
for i = 1, #ARGV, 2 do record[ARGV[i]] = ARGV[i + 1] end
redis.call('set', KEYS[1], cjson.encode(record), 'KEEPTTL')
return 1
"""


FUNNEL_DAYS = 30  # App Home's window


@dataclass
class Funnel:
    issued: int
    used: int
    expired: int
    median_to_used: timedelta | None
    days: int = FUNNEL_DAYS


@dataclass(frozen=True)
class LinkRecord:
    """One link as the history keeps it."""

    issued_at: datetime
    requested_by: str
    customer_note: str
    customer_ref: str
    token_last4: str
    status: str  # the last one recorded
    used_at: datetime | None
    expires_at: datetime

    def status_at(self, moment: datetime) -> str:
        """USED once seen USED; EXPIRED once its 24 hours are over unused (whether or not
        Exotel was asked); else the last status recorded."""
        if self.used_at is not None:
            return "USED"
        if self.expires_at <= moment:
            return "EXPIRED"
        return self.status


@dataclass(frozen=True)
class RepSummary:
    rep: str  # Slack user id
    issued: int
    used: int
    expired: int  # expired unused
    median_to_used: timedelta | None


@dataclass(frozen=True)
class FollowUp:
    """A customer whose links expired unused."""

    note: str
    ref: str
    rep: str


@dataclass
class Summary:
    reps: list[RepSummary] = field(default_factory=list)
    follow_up: list[FollowUp] = field(default_factory=list)

    @property
    def issued(self) -> int:
        return sum(rep.issued for rep in self.reps)


def summarise(records: Iterable[LinkRecord], at: datetime) -> Summary:
    """Per rep (most links first): issued, turned USED, expired unused, the median time to
    USED; then each customer (note, reference, rep) with a link that expired unused and
    none used, in the order first issued."""
    by_rep: dict[str, list[LinkRecord]] = {}
    customers: dict[tuple[str, str, str], bool] = {}  # -> any link of theirs used
    for record in records:
        by_rep.setdefault(record.requested_by, []).append(record)
        key = (" ".join(record.customer_note.split()).casefold(),
               record.customer_ref.casefold(), record.requested_by)
        status = record.status_at(at)
        if status == "USED":
            customers[key] = True
        elif status == "EXPIRED":
            customers.setdefault(key, False)
    shown: dict[tuple[str, str, str], FollowUp] = {}
    for rep_records in by_rep.values():
        for record in rep_records:
            key = (" ".join(record.customer_note.split()).casefold(),
                   record.customer_ref.casefold(), record.requested_by)
            if customers.get(key) is False and key not in shown:
                shown[key] = FollowUp(record.customer_note, record.customer_ref,
                                      record.requested_by)
    reps = [_rep_summary(rep, items, at) for rep, items in by_rep.items()]
    reps.sort(key=lambda r: (-r.issued, r.rep))
    return Summary(reps=reps, follow_up=list(shown.values()))


def _rep_summary(rep: str, records: list[LinkRecord], at: datetime) -> RepSummary:
    issued, used, expired, median = _counts(
        ((r.issued_at.timestamp(), r.used_at.timestamp() if r.used_at else None,
          r.expires_at.timestamp()) for r in records), at.timestamp())
    return RepSummary(rep=rep, issued=issued, used=used, expired=expired,
                      median_to_used=median)


def _counts(links: Iterable[tuple[float, float | None, float]],
            at: float) -> tuple[int, int, int, timedelta | None]:
    """Of links given as (issued at, used at or None, expires at), Unix time: how many
    were issued, turned USED, expired unused by `at`, and the median time to USED. The
    report's per-rep lines and App Home's funnel both count this way."""
    durations: list[float] = []
    issued = expired = 0
    for issued_at, used_at, expires_at in links:
        issued += 1
        if used_at is not None:
            durations.append(max(0.0, used_at - issued_at))
        elif expires_at <= at:
            expired += 1
    median = timedelta(seconds=statistics.median(durations)) if durations else None
    return issued, len(durations), expired, median


def _cell(value: str) -> str:
    """A text cell a spreadsheet shows as text: one that would start a formula is quoted."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else iso(moment)


def to_csv(records: Iterable[LinkRecord], at: datetime) -> str:
    """One row per link, with a header (CSV_FIELDS); statuses as of `at`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in records:
        writer.writerow([_iso(r.issued_at), _cell(r.requested_by), _cell(r.customer_note),
                         _cell(r.customer_ref), _cell(r.token_last4), r.status_at(at),
                         _iso(r.used_at), _iso(r.expires_at)])
    return out.getvalue()


def _member(link: TrackedLink) -> str:
    return f"{link.requester.user_id}|{link_id(link.token)}"


def _key(link: TrackedLink) -> str:
    return HISTORY_LINK.format(link_id(link.token))


def _stamp(moment: datetime) -> str:
    return str(int(moment.timestamp()))


def _moment(stamp: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(stamp), UTC) if stamp else None


class History:
    """The per-link records in Redis (keys: `bot.domain.store`)."""

    def __init__(self, client: Redis, retention: timedelta) -> None:
        self.redis = client
        self.retention = retention
        self._update = client.register_script(_UPDATE)

    def issued(self, link: TrackedLink, customer_ref: str = "") -> None:
        """A record of `link`, VALID; again for the same link, the same record."""
        member = _member(link)
        index = HISTORY_INDEX.format(link.requester.team_id)
        key = _key(link)
        record = {"i": _stamp(link.issued_at), "u": link.requester.user_id,
                  "n": link.note[:KEPT_NOTE], "r": customer_ref[:KEPT_REF],
                  "t": link.token[-4:], "s": "VALID", "e": _stamp(link.expires_at)}
        with redis_errors(), self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, json.dumps(record, separators=(",", ":"), ensure_ascii=False),
                     ex=self.retention)
            pipe.zadd(index, {member: link.issued_at.timestamp()})
            pipe.zremrangebyscore(index, "-inf", (now() - self.retention).timestamp())
            pipe.expire(index, self.retention)
            pipe.execute()

    def used(self, link: TrackedLink, used_at: datetime) -> None:
        """The record says USED, and when; the team's index of used links (the funnel's)
        counts it once: one round trip."""
        index = HISTORY_USED.format(link.requester.team_id)
        with redis_errors(), self.redis.pipeline(transaction=False) as pipe:
            self._update(keys=[_key(link)], args=["s", "USED", "d", _stamp(used_at)],
                         client=pipe)
            pipe.zadd(index, {_member(link): used_at.timestamp()}, nx=True)  # counted once
            pipe.zremrangebyscore(index, "-inf", (now() - self.retention).timestamp())
            pipe.expire(index, self.retention)
            pipe.execute()

    def funnel(self, team_id: str, user_id: str | None) -> Funnel:
        """The last FUNNEL_DAYS (or the retention, if shorter) of `user_id`'s links, the
        whole team's if None: from the two indexes alone, one round trip."""
        moment = now()
        days = min(FUNNEL_DAYS, self.retention.days)
        since = (moment - timedelta(days=days)).timestamp()
        with redis_errors(), self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(HISTORY_INDEX.format(team_id), since, "+inf", withscores=True)
            pipe.zrangebyscore(HISTORY_USED.format(team_id), since, "+inf", withscores=True)
            issued, used_pairs = pipe.execute()
        used: dict[str, float] = dict(used_pairs)
        prefix = f"{user_id}|" if user_id else ""
        life = LINK_TTL.total_seconds()
        count, turned, expired, median = _counts(
            ((issued_at, used.get(member), issued_at + life) for member, issued_at in issued
             if member.startswith(prefix)), moment.timestamp())
        return Funnel(issued=count, used=turned, expired=expired, median_to_used=median,
                      days=days)

    def expired(self, link: TrackedLink) -> None:
        self._set(link, {"s": "EXPIRED"})

    def _set(self, link: TrackedLink, values: dict[str, str]) -> None:
        args = [part for pair in values.items() for part in pair]
        with redis_errors():
            self._update(keys=[_key(link)], args=args)

    def period(self, team_id: str, user_id: str | None, since: datetime,
               limit: int = MAX_READ, until: datetime | None = None) -> list[LinkRecord]:
        """The records of links issued since `since` (and before `until`, if given: a
        digest's period), `user_id`'s (the team's if None), oldest first: the newest
        `limit` of them."""
        index = HISTORY_INDEX.format(team_id)
        top = "+inf" if until is None else f"({until.timestamp()}"
        with redis_errors():  # the team's: the newest `limit`; one rep's: filtered below
            members: list[Any] = (
                self.redis.zrevrangebyscore(index, top, since.timestamp()) if user_id else
                self.redis.zrevrangebyscore(index, top, since.timestamp(), start=0, num=limit))
        prefix = f"{user_id}|" if user_id else ""
        ids = [m.split("|", 1)[1] for m in members if m.startswith(prefix)][:limit]
        records: list[LinkRecord] = []
        for start in range(0, len(ids), READ_CHUNK):
            with redis_errors():
                raws = self.redis.mget([HISTORY_LINK.format(i)
                                        for i in ids[start:start + READ_CHUNK]])
            records.extend(_record(json.loads(raw)) for raw in raws if raw)
        records.reverse()
        return records


def _record(row: dict[str, str]) -> LinkRecord:
    """A record as its key holds it: one compact JSON object of short keys."""
    issued_at = _moment(row.get("i"))
    expires_at = _moment(row.get("e"))
    assert issued_at is not None and expires_at is not None
    return LinkRecord(issued_at=issued_at, requested_by=row.get("u", ""),
                      customer_note=row.get("n", ""), customer_ref=row.get("r", ""),
                      token_last4=row.get("t", ""), status=row.get("s", "VALID"),
                      used_at=_moment(row.get("d")), expires_at=expires_at)
