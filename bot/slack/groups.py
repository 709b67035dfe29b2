"""Slack user-group membership, cached in Redis for every process and refreshed in the
background, so that the ack of a command never waits long on Slack.

Before an ack the bot reads the cache; a group it has never seen is looked up once within
what is left of the ack's deadline. A failed look-up is remembered for a short while (no
command repeats it meanwhile) and a worker job fetches the group without the ack's hurry.
See docs/decisions/0004-user-groups-out-of-the-ack.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import redis
from redis import Redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)

MEMBERS_KEY = "onboard:usergroup:{}"  # {"users": [...], "at": epoch seconds}
FAILED_KEY = "onboard:usergroup:failed:{}"  # a look-up just failed: do not repeat it yet
REFRESHING_KEY = "onboard:usergroup:refreshing:{}"  # a refresh job is queued or running
FRESH_SECONDS = 300  # membership this old is used and refreshed behind the scenes
KEPT_SECONDS = 3600  # older than this it is not used at all
FAILED_SECONDS = 30
REFRESHING_SECONDS = 60
MIN_LOOKUP_SECONDS = 0.2  # with less of the ack's deadline left, no look-up is started
BACKGROUND_TIMEOUT = 10  # a worker's look-up may take this long


class GroupCache:
    def __init__(self, client: Redis, slack: Callable[[float], WebClient],
                 refresh: Callable[[str], None] | None = None) -> None:
        """`slack(timeout)` gives a Web API client; `refresh(group)` queues a background
        refresh (the worker's job calls `refresh_now`)."""
        self._redis = client
        self._slack = slack
        self._refresh = refresh

    def members(self, group_id: str, deadline: float) -> frozenset[str] | None:
        """The group's members, or None when they cannot be known by `deadline`
        (time.monotonic()). Never waits on Slack past the deadline."""
        try:
            raw = self._redis.get(MEMBERS_KEY.format(group_id))
            if raw is not None:
                cached = json.loads(raw)
                if time.time() - float(cached["at"]) > FRESH_SECONDS:
                    self._schedule(group_id)
                return frozenset(cached["users"])
            if self._redis.exists(FAILED_KEY.format(group_id)):
                return None
        except redis.RedisError as error:
            log.warning("user group cache unreadable: %s", type(error).__name__)
            return None
        remaining = deadline - time.monotonic()
        if remaining < MIN_LOOKUP_SECONDS:
            self._schedule(group_id)
            return None
        return self._fetch(group_id, remaining, background=False)

    def refresh_now(self, group_id: str) -> bool:
        """Fetch the group without the ack's hurry (a worker job); True if it was had."""
        try:
            return self._fetch(group_id, BACKGROUND_TIMEOUT, background=True) is not None
        finally:
            self._quietly(lambda: self._redis.delete(REFRESHING_KEY.format(group_id)))

    def warm(self, group_ids: list[str]) -> None:
        """Queue a refresh of every group not freshly cached (a worker at start)."""
        for group_id in group_ids:
            self._schedule(group_id)

    def _fetch(self, group_id: str, timeout: float, *, background: bool) -> frozenset[str] | None:
        try:
            users = self._slack(timeout).usergroups_users_list(usergroup=group_id)["users"]
        except Exception as error:  # Slack's error, a timeout, a refused connection: all alike
            reason = (error.response.get("error") if isinstance(error, SlackApiError)
                      else type(error).__name__)
            log.warning("could not list user group %s: %s", group_id, reason)
            self._quietly(lambda: self._redis.set(FAILED_KEY.format(group_id), "1",
                                                  ex=FAILED_SECONDS))
            if not background:
                self._schedule(group_id)
            return None
        members = frozenset(str(user) for user in users)
        record = json.dumps({"users": sorted(members), "at": time.time()})
        self._quietly(lambda: self._store(group_id, record))
        return members

    def _store(self, group_id: str, record: str) -> None:
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(MEMBERS_KEY.format(group_id), record, ex=KEPT_SECONDS)
            pipe.delete(FAILED_KEY.format(group_id))
            pipe.execute()

    def _schedule(self, group_id: str) -> None:
        """Queue one refresh of the group, unless one is already queued or running."""
        if self._refresh is None:
            return
        try:
            if self._redis.set(REFRESHING_KEY.format(group_id), "1", nx=True,
                               ex=REFRESHING_SECONDS):
                self._refresh(group_id)
        except Exception as error:  # the ack must not fail for a cache's sake
            log.warning("could not queue a refresh of user group %s: %s", group_id,
                        type(error).__name__)

    @staticmethod
    def _quietly(write: Callable[[], object]) -> None:
        try:
            write()
        except redis.RedisError as error:
            log.warning("user group cache not written: %s", type(error).__name__)
