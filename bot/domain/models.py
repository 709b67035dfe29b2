"""What crosses a boundary: who asked, and what the bot issued to them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class Requester(BaseModel):
    """The Slack user who ran a command, and where."""

    model_config = ConfigDict(frozen=True)

    team_id: str
    user_id: str
    channel_id: str


class TrackedLink(BaseModel):
    """One issued onboarding link, as the bot records it for its 24 hours of life."""

    token: str
    url: str
    batch_id: str
    requester: Requester
    note: str
    issued_at: datetime
    expires_at: datetime


class Batch(BaseModel):
    """The links one command issued, recorded together for reminders and listings.

    `customer_ref`: the customer's reference in a CRM (a record id or an email), checked on
    its way in; "" when none was given."""

    batch_id: str
    requester: Requester
    note: str
    tokens: list[str]
    issued_at: datetime
    expires_at: datetime
    reminder_due: datetime | None = None
    customer_ref: str = ""


@dataclass
class Listing:
    """The newest live batches of a scope, and how many are live in all."""

    batches: list[Batch]
    total: int
