"""Link previews (unfurls): what the bot says of an onboarding link pasted in Slack.

A busy channel can paste the same link many times, and every preview would be an Exotel
call: statuses are cached briefly, and previews leave Exotel alone once most of the shared
request budget is taken, so that issuing links always has room."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from redis import Redis

from bot.domain.models import TrackedLink
from bot.domain.ratelimit import SharedRateLimiter
from bot.domain.store import TokenStore, redis_errors
from bot.exotel.client import ExotelClient, ExotelError
from bot.exotel.tokens import mask, token_from_link

log = logging.getLogger(__name__)

UNFURL_DOMAIN = "messaging.exotel.com"
STATUS_KEY = "onboard:preview:status:{}"
STATUS_SECONDS = 60  # a preview may show a status up to this old
BUDGET_SHARE = 0.75  # past this share of Exotel's window in use, previews don't ask
PREVIEW_SHARE = 0.1  # and previews themselves ask at most this share of the budget a minute
MAX_PREVIEWS = 5  # links previewed per message; more are left as they are


@dataclass(frozen=True)
class Preview:
    url: str
    token: str
    status: str | None  # None: unknown (budget kept for issuing, or Exotel failed)
    tracked: TrackedLink | None


def token_of(url: str) -> str | None:
    """The token of an onboarding link on Exotel's domain, else None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or (parts.hostname or "") != UNFURL_DOMAIN:
        return None
    return token_from_link(url)


class LinkPreviews:
    def __init__(self, redis: Redis, exotel: ExotelClient, store: TokenStore,
                 budget: SharedRateLimiter, budget_key: str) -> None:
        self._redis = redis
        self._exotel = exotel
        self._store = store
        self._budget = budget
        self._own = SharedRateLimiter(redis, max(1, int(budget.per_minute * PREVIEW_SHARE)),
                                      key=f"{budget_key}:previews")

    def preview(self, url: str) -> Preview | None:
        token = token_of(url)
        if token is None:
            return None
        return Preview(url=url, token=token, status=self.status(token),
                       tracked=self._store.get_link(token))

    def status(self, token: str) -> str | None:
        key = STATUS_KEY.format(token)
        with redis_errors():
            cached = self._redis.get(key)
            if cached:
                return str(cached)
            if (self._budget.share_used() > BUDGET_SHARE
                    or not self._own.try_acquire()):
                log.debug("preview of %s without a status: Exotel's budget is kept for "
                          "issuing", mask(token))
                return None
        try:
            status = self._exotel.token_status(token)
        except ExotelError as error:
            log.debug("preview of %s without a status: %s", mask(token), error)
            return None
        with redis_errors():
            self._redis.set(key, status, ex=STATUS_SECONDS)
        return status
