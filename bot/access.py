"""Who may issue and check links: allowlists of users, user groups and channels, and admins."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from cachetools import TTLCache
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.settings import Settings

log = logging.getLogger(__name__)
GROUP_CACHE_SECONDS = 300  # user group membership is looked up at most every five minutes


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # why not, in words for the refused user


class AccessPolicy:
    def __init__(self, settings: Settings, slack: WebClient) -> None:
        self._users = set(settings.allowed_user_ids)
        self._groups = list(settings.allowed_usergroup_ids)
        self._channels = set(settings.allowed_channel_ids)
        self.admins = list(settings.admin_user_ids)
        self._check_restricted = settings.check_token_restricted
        self._slack = slack
        self._members: TTLCache[str, frozenset[str]] = TTLCache(maxsize=64,
                                                               ttl=GROUP_CACHE_SECONDS)
        self._lock = threading.Lock()

    def is_admin(self, user_id: str) -> bool:
        return user_id in self.admins

    def may_issue(self, user_id: str, channel_id: str) -> Decision:
        if self.is_admin(user_id):
            return Decision(True)
        if self._channels and channel_id not in self._channels:
            return Decision(False, "Onboarding links can't be issued in this channel.")
        if not self._users and not self._groups:
            return Decision(True)
        if user_id in self._users or any(user_id in self._group(g) for g in self._groups):
            return Decision(True)
        return Decision(False, "You are not on the list of people who may issue onboarding "
                               "links.")

    def may_check(self, user_id: str, channel_id: str) -> Decision:
        return self.may_issue(user_id, channel_id) if self._check_restricted else Decision(True)

    def _group(self, group_id: str) -> frozenset[str]:
        with self._lock:
            cached = self._members.get(group_id)
        if cached is not None:
            return cached
        try:
            users = self._slack.usergroups_users_list(usergroup=group_id)["users"]
        except SlackApiError as error:
            # Refuse rather than guess; the operator sees why in the log.
            log.warning("could not list user group %s: %s", group_id,
                        error.response.get("error"))
            return frozenset()
        members = frozenset(users)
        with self._lock:
            self._members[group_id] = members
        return members
