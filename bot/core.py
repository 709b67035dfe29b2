"""The core the Slack side calls: Exotel, the store and the use cases, built from settings."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from bot.exotel import ExotelClient, ExotelError
from bot.onboarding import NotTracked, Onboarding
from bot.ratelimit import SharedRateLimiter
from bot.settings import Settings
from bot.store import StoreUnavailable, TokenStore, connect

# Failures that are news for the user, not bugs: logged without a traceback.
EXPECTED_FAILURES = (ExotelError, StoreUnavailable, NotTracked)


@dataclass
class Core:
    settings: Settings
    store: TokenStore
    onboarding: Onboarding


def build_core(settings: Settings, redis: Redis | None = None) -> Core:
    if redis is None:
        if settings.redis_url is None:
            raise ValueError("REDIS_URL must be resolved before building the core")
        redis = connect(settings.redis_url)
    store = TokenStore(redis)
    limiter = SharedRateLimiter(
        redis, settings.exotel_rate_per_minute, key=f"exotel:{settings.exotel_account_sid}"
    )
    exotel = ExotelClient(
        base_url=settings.exotel_url,
        account_sid=settings.exotel_account_sid,
        api_key=settings.exotel_api_key,
        api_token=settings.exotel_api_token.get_secret_value(),
        limiter=limiter,
        timeout=settings.exotel_timeout,
        deadline=settings.exotel_deadline,
    )
    return Core(settings=settings, store=store, onboarding=Onboarding(exotel, store))
