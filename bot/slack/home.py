"""Each user's App Home tab, republished after their commands, one publish at a time per user.

A burst of commands from one user (a 50-link batch, a Renew storm) would otherwise read and
render their whole listing once per command. Here a refresh asked for while another is under
way for the same user is folded into one more publish when that one ends, so the tab still
ends up showing the latest state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from bot.domain.models import Requester
from bot.domain.onboarding import Onboarding
from bot.slack import linkviews, messages
from bot.slack.delivery import Delivery

log = logging.getLogger(__name__)


class HomeTabs:
    def __init__(self, onboarding: Onboarding, delivery: Delivery,
                 is_admin: Callable[[str], bool] = lambda _: False) -> None:
        self._onboarding = onboarding
        self._delivery = delivery
        self._is_admin = is_admin
        self._lock = threading.Lock()
        self._publishing: set[str] = set()
        self._again: set[str] = set()

    def refresh(self, viewer: Requester) -> None:
        user = viewer.user_id
        with self._lock:
            if user in self._publishing:
                self._again.add(user)  # the thread publishing now will publish once more
                return
            self._publishing.add(user)
        while True:
            self._publish(viewer)
            with self._lock:
                if user not in self._again:
                    self._publishing.discard(user)
                    return
                self._again.discard(user)

    def _publish(self, viewer: Requester) -> None:
        """A failure here must not spoil the command's own reply: it is logged only."""
        try:
            view = self.view(viewer)
            self._delivery.publish_home(viewer.user_id, view)
        except Exception:
            log.warning("could not publish the App Home of %s", viewer.user_id, exc_info=True)

    def view(self, viewer: Requester) -> dict[str, Any]:
        """The viewer's live links in full with their status, and the 30-day funnel (the
        team's too, for admins)."""
        onboarding = self._onboarding
        listing = onboarding.live(viewer, "user", messages.MAX_LISTED)
        details = onboarding.details(listing)
        mine = onboarding.statuses.funnel(viewer.team_id, viewer.user_id)
        team = (onboarding.statuses.funnel(viewer.team_id, None)
                if self._is_admin(viewer.user_id) else None)
        return linkviews.home(listing, details, viewer.user_id, mine, team)
