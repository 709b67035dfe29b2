"""Who may do what: allowlists of users, user groups and channels, admins, and who may act
on a batch. Every listener asks here; none holds a rule of its own."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Protocol

from bot.domain.models import Batch
from bot.settings import Settings

# Everything a listener does before its ack (look-ups and enqueueing) fits well inside
# Slack's 3 s; look-ups get at most this much of it.
ACK_LOOKUP_SECONDS = 1.0
# Batch ids are the bot's own: uuid4().hex. A button value of any other shape is refused
# before it reaches a Redis key.
BATCH_ID = re.compile(r"[0-9a-f]{32}")
NOT_ON_LIST = "You are not on the list of people who may issue onboarding links."
UNCONFIRMED = ("The bot couldn't confirm your user group membership with Slack just now; "
               "please try again in a minute.")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # why not, in words for the refused user


ALLOWED = Decision(True)


class Memberships(Protocol):
    """Where user-group members come from (Slack's, through a cache in the Slack layer)."""

    def members(self, group_id: str, deadline: float) -> frozenset[str] | None:
        """The members, or None when they cannot be known by `deadline` (time.monotonic())."""


def valid_batch_id(value: object) -> bool:
    return isinstance(value, str) and BATCH_ID.fullmatch(value) is not None


class AccessPolicy:
    def __init__(self, settings: Settings, groups: Memberships) -> None:
        self._users = set(settings.allowed_user_ids)
        self._groups = list(settings.allowed_usergroup_ids)
        self._channels = set(settings.allowed_channel_ids)
        self.admins = list(settings.admin_user_ids)
        self._check_restricted = settings.check_token_restricted
        self.groups = groups

    def is_admin(self, user_id: str) -> bool:
        return user_id in self.admins

    def may_issue(self, user_id: str, channel_id: str) -> Decision:
        if self.is_admin(user_id):
            return ALLOWED
        if self._channels and channel_id not in self._channels:
            return Decision(False, "Onboarding links can't be issued in this channel.")
        if not self._users and not self._groups:
            return ALLOWED
        if user_id in self._users:
            return ALLOWED
        return self._by_groups(user_id, time.monotonic() + ACK_LOOKUP_SECONDS)

    @property
    def restricts_channels(self) -> bool:
        return bool(self._channels)

    def may_open_form(self, user_id: str) -> Decision:
        """The user part of `may_issue`: the form asks for its channel only when submitted,
        so any allowed channel stands in for it until then."""
        return self.may_issue(user_id, next(iter(self._channels), ""))

    def may_check(self, user_id: str, channel_id: str) -> Decision:
        return self.may_issue(user_id, channel_id) if self._check_restricted else ALLOWED

    def may_preview(self, user_id: str, channel_id: str) -> Decision:
        """A link preview is a status check shown to the channel: /check-token's policy."""
        return self.may_check(user_id, channel_id)

    def may_list(self, user_id: str, channel_id: str, scope: str) -> Decision:
        """Listing follows issuing; everyone's links (`all`) only for admins."""
        decision = self.may_issue(user_id, channel_id)
        if decision.allowed and scope == "all" and not self.is_admin(user_id):
            return Decision(False, "Only admins can list everyone's links.")
        return decision

    def may_click(self, user_id: str, channel_id: str, value: object) -> Decision:
        """A button on a batch: its value must be a batch id the bot made, and the clicker
        must be allowed to issue. Whose batch it is is `may_act_on`'s question."""
        if not valid_batch_id(value):
            return Decision(False, "That button doesn't belong to a batch of links this bot "
                                   "made.")
        return self.may_issue(user_id, channel_id)

    def may_act_on(self, user_id: str, batch: Batch) -> Decision:
        """Stop reminding, forget or share a batch: its requester or an admin."""
        if batch.requester.user_id == user_id or self.is_admin(user_id):
            return ALLOWED
        return Decision(False, "Only the person who issued those links (or an admin) can do "
                               "that.")

    def _by_groups(self, user_id: str, deadline: float) -> Decision:
        unknown = False
        for group_id in self._groups:
            members = self.groups.members(group_id, deadline)
            if members is None:
                unknown = True
            elif user_id in members:
                return ALLOWED
        # Unknown membership refuses: see docs/decisions/0004-user-groups-out-of-the-ack.md.
        return Decision(False, UNCONFIRMED if unknown else NOT_ON_LIST)
