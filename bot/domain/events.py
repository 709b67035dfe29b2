"""Link events for webhooks: what happened to a link, as receivers get it. No Slack here.

An event is `{"type", "timestamp", "data"}`, serialised once when it is made, with an id
(`webhook-id`) fixed then too: it travels with each delivery job and is the same on every
retry, so receivers dedupe by it. A link event's id is derived from its type and token, so
the same event made twice (a command cut short and accounted for, a status seen twice by
overlapping polls) has the same id, and a receiver keeps it once.

Types: `link.issued` (one per link, when it is recorded), `link.used` (a status check saw
USED for the first time), `link.expired` (a link never seen USED ended: Exotel said EXPIRED,
or the status poll's last look had no answer in time, `bot.slack.poller`), `link.forgotten`,
and `webhook.test` (`python -m bot webhooks test`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bot.domain.models import Batch, TrackedLink
from bot.domain.store import STORE_FAILURES, iso, now
from bot.exotel.tokens import mask

if TYPE_CHECKING:
    from bot.domain.store import TokenStore

log = logging.getLogger(__name__)

EventType = Literal["link.issued", "link.used", "link.expired", "link.forgotten",
                    "webhook.test"]


@dataclass(frozen=True)
class Event:
    id: str  # webhook-id
    type: EventType
    body: str  # the JSON sent, as signed


@dataclass(frozen=True)
class Sealed:
    """An event's JSON as a delivery job's argument. RQ logs a failed job's arguments (as
    extra fields, which LOG_FORMAT=json writes out): this shows its size, never the full
    links and notes in it."""

    text: str

    def __repr__(self) -> str:
        return f"<event body, {len(self.text)} characters>"

    __str__ = __repr__


def make_event(type_: EventType, data: dict[str, Any], event_id: str | None = None) -> Event:
    body = json.dumps({"type": type_, "timestamp": iso(now()), "data": data},
                      separators=(",", ":"), ensure_ascii=False)
    return Event(id=event_id or f"msg_{uuid.uuid4().hex}", type=type_, body=body)


def link_event_id(type_: EventType, token: str) -> str:
    """The same for the same event of the same link, whoever makes it (no token in it)."""
    return "msg_" + hashlib.sha256(f"{type_}:{token}".encode()).hexdigest()[:32]


def link_data(link: TrackedLink, customer_ref: str, status: str, sandbox: bool,
              used_at: datetime | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "link": link.url,
        "token_last4": link.token[-4:],
        "batch_id": link.batch_id,
        "customer_note": link.note,
        "customer_ref": customer_ref or None,
        "requested_by": link.requester.user_id,
        "team_id": link.requester.team_id,
        "channel_id": link.requester.channel_id,
        "issued_at": iso(link.issued_at),
        "expires_at": iso(link.expires_at),
        "status": status,
        "sandbox": sandbox,
    }
    if used_at is not None:
        data["used_at"] = iso(used_at)
    return data


def ping_event() -> Event:
    """What `python -m bot webhooks test` sends: a fresh id each time."""
    return make_event("webhook.test", {"message": "onboard-bot test delivery"})


class Outbox(Protocol):
    """Where events go: one delivery job per receiver (bot.domain.webhooks)."""

    def emit(self, event: Event) -> int: ...


class LinkEvents:
    """Makes link events and hands them to the outbox. Never raises for Redis: an event
    that could not be queued is logged, and what the bot was doing goes on."""

    def __init__(self, outbox: Outbox | None, store: TokenStore | None,
                 sandbox: Callable[[], bool]) -> None:
        self.outbox = outbox  # None: no WEBHOOK_URLS, nothing to make
        self.store = store
        self.sandbox = sandbox

    @property
    def enabled(self) -> bool:
        return self.outbox is not None

    def issued(self, batch: Batch, links: Iterable[TrackedLink]) -> None:
        for link in links:
            self._emit("link.issued", link, batch.customer_ref, "VALID")

    def used(self, link: TrackedLink, used_at: datetime, customer_ref: str | None = None
             ) -> None:
        """`customer_ref`: the batch's, if the caller has it (else read here)."""
        self._emit("link.used", link, self._ref_of(link, customer_ref), "USED", used_at)

    def expired(self, link: TrackedLink, customer_ref: str | None = None) -> None:
        self._emit("link.expired", link, self._ref_of(link, customer_ref), "EXPIRED")

    def forgotten(self, batch: Batch, links: Iterable[TrackedLink], status: str = "VALID"
                  ) -> None:
        for link in links:
            self._emit("link.forgotten", link, batch.customer_ref, status)

    def _ref_of(self, link: TrackedLink, known: str | None) -> str:
        if known is not None or self.store is None or self.outbox is None:
            return known or ""
        try:
            batch = self.store.get_batch(link.batch_id, ended=True)
        except STORE_FAILURES:
            return ""
        return batch.customer_ref if batch else ""

    def _emit(self, type_: EventType, link: TrackedLink, customer_ref: str, status: str,
              used_at: datetime | None = None) -> None:
        if self.outbox is None:
            return
        event = make_event(type_, link_data(link, customer_ref, status, self.sandbox(),
                                            used_at), link_event_id(type_, link.token))
        try:
            self.outbox.emit(event)
        except STORE_FAILURES:
            log.error("webhook event %s of %s not queued: Redis did not take it", type_,
                      mask(link.token))


NO_EVENTS = LinkEvents(None, None, lambda: False)
