"""Exotel's WhatsApp ISV API: create onboarding links and validate tokens. No Slack here."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from bot.exotel.tokens import token_from_link

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# Keys under which the POST response may carry the link: the docs use both spellings.
LINK_KEYS = ("onboarding_url", "url", "Url")
SANDBOX_HEADER = "X-Exotel-Sandbox"  # sent by bot.exotel.sandbox, never by Exotel
MAX_ATTEMPTS = 5  # Exotel's FAQ: exponential backoff from 1 s, at most 5 retries
MIN_ATTEMPT_SECONDS = 0.5  # no point starting a request with less time than this left
DETAIL_LIMIT = 200
# A link must be safe to put in a Slack message as it is: no spaces, brackets or pipes.
SAFE_URL = re.compile(r"https?://[^\s<>|\"']{1,2000}")


class ExotelError(Exception):
    """An Exotel call failed; `str(error)` is fit to show in the channel."""

    retryable = False

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class ExotelBadRequest(ExotelError):
    pass


class ExotelAuthError(ExotelError):
    pass


class ExotelPlanError(ExotelError):
    pass


class ExotelNotFound(ExotelError):
    pass


class ExotelRateLimited(ExotelError):
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ExotelUnavailable(ExotelError):
    retryable = True


class ExotelTimeout(ExotelError):
    """No answer in time. Retried only where a repeat is harmless (reads)."""


class ExotelBadResponse(ExotelError):
    pass


@dataclass(frozen=True)
class OnboardingLink:
    url: str
    token: str


@dataclass
class CreateOutcome:
    """What a request for `count` links came to: the links made and the errors of the rest."""

    links: list[OnboardingLink] = field(default_factory=list)
    errors: list[ExotelError] = field(default_factory=list)


class Limiter(Protocol):
    """Exotel's request budget; `acquire` raises RateLimitExceeded when it is spent."""

    def acquire(self, deadline: float) -> None: ...


class RateLimitExceeded(Exception):
    def __init__(self, retry_in: float) -> None:
        super().__init__(f"rate limit reached; retry in {retry_in:.0f} s")
        self.retry_in = retry_in


class ExotelClient:
    def __init__(
        self,
        *,
        base_url: str,
        account_sid: str,
        api_key: str,
        api_token: str,
        limiter: Limiter,
        timeout: float = 8.0,
        deadline: float = 20.0,
        concurrency: int = 25,
        connections: int = 64,
        observe: Callable[[str, str, float], None] | None = None,
        status_limiter: Limiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/v2/accounts/{account_sid}/isv"
        self._session = requests.Session()
        self._session.auth = (api_key, api_token)  # basic auth header, never in the URL
        self._session.headers["Accept"] = "application/json"
        # requests reads proxy and CA settings from the environment again on every call, a
        # scan costing more CPU than the rest of the call: read them once, here.
        self._session.proxies = requests.utils.get_environ_proxies(self._url)
        self._session.verify = (os.environ.get("REQUESTS_CA_BUNDLE")
                                or os.environ.get("CURL_CA_BUNDLE") or True)
        self._session.trust_env = False
        # Exotel calls come from many threads (each command's, and a batch's own pool): keep
        # a socket for each, or the surplus would be opened and closed on every call.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=connections)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._limiter = limiter
        # Checks, status polls and reminders: kept off the share of the budget issuing keeps.
        self._status_limiter = status_limiter or limiter
        self._timeout = timeout
        self._deadline = deadline
        self._concurrency = concurrency
        self._observe = observe  # (method, outcome, seconds) of every call, for metrics
        # Deadlines, backoffs and Retry-After waits go by these: a test's fake clock checks
        # them without waiting. The limiters' deadlines are on the same clock.
        self._clock = clock
        self._sleep = sleep
        # Known from the settings (anything but Exotel's own hosts is a stand-in), so that a
        # process that has not called Exotel yet marks its messages too; or from the answers.
        self.sandbox = not talks_to_exotel(base_url)

    def create_links(self, count: int,
                     on_link: Callable[[OnboardingLink], object] | None = None) -> CreateOutcome:
        """Create `count` links, a bounded number at a time, all within one deadline.

        `on_link` is called with each link the moment Exotel returns it (to record it). A
        link is returned whatever `on_link` did: Exotel made it and charged for it, so what
        becomes of one the caller could not record is the caller's to say."""
        deadline = self._clock() + self._deadline

        def one(_: int) -> OnboardingLink | ExotelError:
            result = self._create_one(deadline)
            if on_link is not None and isinstance(result, OnboardingLink):
                try:
                    on_link(result)
                except Exception:
                    log.warning("on_link failed for a link Exotel made", exc_info=True)
            return result

        outcome = CreateOutcome()
        for result in self._concurrently(one, range(count)):
            if isinstance(result, OnboardingLink):
                outcome.links.append(result)
            else:
                outcome.errors.append(result)
        return outcome

    def token_statuses(self, tokens: Sequence[str]) -> dict[str, str | ExotelError]:
        """Each token's status, or the error that kept Exotel from saying, asked concurrently."""
        def status(token: str) -> str | ExotelError:
            try:
                return self.token_status(token)
            except ExotelError as error:
                return error

        return dict(zip(tokens, self._concurrently(status, tokens), strict=True))

    def _concurrently(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """fn over items, a bounded number at a time; the usual single item needs no pool."""
        if len(items) == 1:
            return [fn(items[0])]
        with ThreadPoolExecutor(max_workers=min(len(items), self._concurrency)) as pool:
            return list(pool.map(fn, items))

    def create_link(self) -> OnboardingLink:
        result = self._create_one(self._clock() + self._deadline)
        if isinstance(result, ExotelError):
            raise result
        return result

    def token_status(self, token: str) -> str:
        """Exotel's status for a token: VALID, EXPIRED, USED, or whatever else it says."""
        deadline = self._clock() + self._deadline
        body = self._call("GET", deadline, params={"access_token": token}, idempotent=True,
                          limiter=self._status_limiter,
                          not_found="Exotel does not know this token: check it was copied whole.")
        status = _payload(body).get("onboarding_token_status")
        if not isinstance(status, str) or not status:
            raise ExotelBadResponse("Exotel's answer did not include the token's status.")
        return status.upper()

    def _create_one(self, deadline: float) -> OnboardingLink | ExotelError:
        try:
            body = self._call(
                "POST", deadline, idempotent=False,
                not_found="Exotel could not find this account (HTTP 404): the operator "
                "should check EXOTEL_ACCOUNT_SID and EXOTEL_REGION.",
            )
            return _link_from(body)
        except ExotelError as error:
            return error

    def _call(self, method: str, deadline: float, *, idempotent: bool, not_found: str,
              params: dict[str, str] | None = None,
              limiter: Limiter | None = None) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            return self._request(method, deadline, params, idempotent, not_found,
                                 limiter or self._limiter)

        retrying = Retrying(
            retry=retry_if_exception(lambda e: getattr(e, "retryable", False)),
            wait=_backoff,
            stop=stop_any(stop_after_attempt(MAX_ATTEMPTS), _StopBefore(deadline, self._clock)),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(once)

    def _request(self, method: str, deadline: float, params: dict[str, str] | None,
                 idempotent: bool, not_found: str, limiter: Limiter) -> dict[str, Any]:
        try:
            limiter.acquire(deadline)
        except RateLimitExceeded as exc:
            raise ExotelRateLimited(
                f"The bot is at Exotel's request limit; try again in {exc.retry_in:.0f} s.",
                retry_after=exc.retry_in,  # longer than the deadline allows: stop at once
            ) from None
        remaining = deadline - self._clock()
        if remaining < MIN_ATTEMPT_SECONDS:
            raise ExotelTimeout("Exotel did not answer in time. Please try again shortly.")
        started = time.monotonic()
        outcome = "unreachable"
        try:
            response = self._session.request(
                method, self._url, params=params, timeout=min(self._timeout, remaining)
            )
            outcome = str(response.status_code)
            self.sandbox = self.sandbox or SANDBOX_HEADER in response.headers
        except requests.ConnectTimeout:
            raise _unreachable() from None
        except requests.Timeout:
            outcome = "timeout"
            # The request may have reached Exotel; only a read is safe to send again.
            error = ExotelTimeout("Exotel did not answer in time. Please try again shortly.")
            error.retryable = idempotent
            raise error from None
        except requests.ConnectionError:
            raise _unreachable() from None
        finally:
            seconds = time.monotonic() - started
            log.debug("exotel %s took %.3f s: %s", method, seconds, outcome)
            if self._observe:
                self._observe(method, outcome, seconds)
        return _parse(response, not_found)


def talks_to_exotel(base_url: str) -> bool:
    """True for Exotel's own API hosts (api.exotel.com, api.in.exotel.com, ...)."""
    from urllib.parse import urlsplit

    host = (urlsplit(base_url).hostname or "").lower()
    return host == "exotel.com" or host.endswith(".exotel.com")


def _unreachable() -> ExotelUnavailable:
    return ExotelUnavailable("Exotel could not be reached. Please try again shortly.")


def _parse(response: requests.Response, not_found: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
        if response.ok:
            raise ExotelBadResponse(
                f"Exotel answered with something that is not JSON (HTTP {response.status_code}).",
                http_status=response.status_code,
            )
    status = response.status_code
    inner = _isv(body)
    # Exotel sometimes reports a failure inside a 200.
    if response.ok and inner.get("status") == "failure" and isinstance(inner.get("code"), int):
        status = inner["code"]
    if 200 <= status < 300:
        return body
    raise _error_for(status, _detail(body), not_found, response.headers.get("Retry-After"))


def _error_for(status: int, detail: str, not_found: str, retry_after: str | None) -> ExotelError:
    suffix = f" Exotel said: {detail}" if detail else ""
    if status in (401, 403):
        return ExotelAuthError(
            f"Exotel rejected the bot's credentials (HTTP {status}). The bot's operator should "
            "check EXOTEL_API_KEY, EXOTEL_API_TOKEN and EXOTEL_ACCOUNT_SID.", http_status=status)
    if status == 402:
        return ExotelPlanError(
            "Exotel says this account's plan or usage limit does not allow this (HTTP 402). "
            f"Ask the account owner to check the Exotel plan.{suffix}", http_status=status)
    if status == 404:
        return ExotelNotFound(not_found, http_status=status)
    if status == 429:
        return ExotelRateLimited(
            "Exotel is limiting requests right now (HTTP 429). Please try again in a minute.",
            retry_after=_seconds(retry_after), http_status=status)
    if status >= 500:
        return ExotelUnavailable(
            f"Exotel is having trouble (HTTP {status}). Please try again shortly.{suffix}",
            http_status=status)
    if status == 400:
        return ExotelBadRequest(f"Exotel rejected the request (HTTP 400).{suffix}",
                                http_status=status)
    return ExotelError(f"Exotel answered HTTP {status}.{suffix}", http_status=status)


def _isv(body: dict[str, Any]) -> dict[str, Any]:
    response = body.get("response")
    if not isinstance(response, dict):
        return {}
    whatsapp = response.get("whatsapp")
    isv = whatsapp.get("isv") if isinstance(whatsapp, dict) else None
    return isv if isinstance(isv, dict) else response


def _payload(body: dict[str, Any]) -> dict[str, Any]:
    data = _isv(body).get("data")
    return data if isinstance(data, dict) else {}


def _detail(body: dict[str, Any]) -> str:
    """Exotel's own words about an error, from the v2 or the v1 (RestException) shape."""
    error = _isv(body).get("error_data")
    parts: list[Any] = []
    if isinstance(error, dict):
        parts = [error.get("message"), error.get("description")]
    rest = body.get("RestException")
    if isinstance(rest, dict):
        parts.append(rest.get("Message"))
    text = " ".join(dict.fromkeys(str(p).strip() for p in parts if p))
    return text[:DETAIL_LIMIT]


def _link_from(body: dict[str, Any]) -> OnboardingLink:
    data = _payload(body)
    url = next((data[k] for k in LINK_KEYS if isinstance(data.get(k), str) and data[k]), None)
    if url is None:
        raise ExotelBadResponse("Exotel's answer did not include an onboarding link.")
    token = token_from_link(url) if SAFE_URL.fullmatch(url) else None
    if token is None:
        raise ExotelBadResponse("Exotel's onboarding link has no token at its end.")
    return OnboardingLink(url=url, token=token)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date; backoff will do


def _backoff(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome else None
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return float(retry_after)
    return _exponential(state)


_exponential = wait_exponential_jitter(initial=1, max=8, jitter=0.5)


class _StopBefore(stop_base):
    """Stop retrying when the next attempt could not start before the deadline."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self._deadline = deadline
        self._clock = clock

    def __call__(self, state: RetryCallState) -> bool:
        pause = state.upcoming_sleep or 0.0
        return self._clock() + pause + MIN_ATTEMPT_SECONDS > self._deadline
