"""Waiting at start for what the bot cannot run without: Slack's Web API and Redis.

A platform restarts a process that exits, but gunicorn exits for good when its workers fail to
boot, and a crash loop prints pages of tracebacks. So each wait retries with exponential
backoff (FIRST_WAIT doubling, at most LONGEST_WAIT apart) until what it waits for is
reachable, and each failed attempt is one line saying what is not reachable and when it
retries: the only lines written while it waits.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from bot.domain.store import connect
from bot.settings import Settings
from bot.telemetry.logs import safe_url

log = logging.getLogger(__name__)

FIRST_WAIT = 0.5  # seconds; doubled after each failed attempt
LONGEST_WAIT = 30.0
PROBE_TIMEOUT = 5  # seconds for one attempt
# auth.test errors that no retry can mend: the token itself is wrong.
BAD_TOKEN_ERRORS = {"invalid_auth", "not_authed", "token_revoked", "token_expired",
                    "account_inactive", "not_allowed_token_type"}


class Unreachable(Exception):
    """One attempt found the service not reachable; worth another try."""


class StartupError(Exception):
    """Something no retry can mend (a rejected token); the message says what to fix."""


def wait_for_slack(settings: Settings, *, longest_wait: float = LONGEST_WAIT) -> None:
    """Return once Slack's Web API answers auth.test (as Bolt's App() will call it)."""
    # No retry handlers, and a logger that writes nothing: slack_sdk would retry (and sleep)
    # inside each attempt and log each failure, which the wait's own line says.
    client = WebClient(token=settings.slack_bot_token.get_secret_value(),
                       base_url=settings.slack_api_url, timeout=PROBE_TIMEOUT,
                       retry_handlers=[], logger=_silent("slack_probe"))
    where = settings.slack_api_url

    def attempt() -> None:
        try:
            client.auth_test()
        except SlackApiError as error:
            status = error.response.status_code
            code = str(error.response.get("error") or "")
            if status >= 500 or status == 429:
                raise Unreachable(f"HTTP {status}") from None
            if code in BAD_TOKEN_ERRORS:
                raise StartupError(f"Slack rejected SLACK_BOT_TOKEN ({code}): set it to the "
                                   "Bot User OAuth Token (xoxb-...) of your app") from None
        except (SlackClientError, OSError) as error:
            raise Unreachable(_reason(error)) from None

    _retry(attempt, lambda why: f"Slack's API is not reachable at {where} ({why}); "
           "retrying", "Slack's API", longest_wait)


def wait_for_redis(url: str, *, tls_verify: bool = True,
                   longest_wait: float = LONGEST_WAIT) -> None:
    """Return once Redis at `url` answers PING."""
    client = connect(url, tls_verify=tls_verify, health_check_interval=0)
    where = safe_url(url)

    def attempt() -> None:
        try:
            client.ping()
        except redis.AuthenticationError:
            raise StartupError(f"Redis at {where} refused the password: put the right one "
                               "in REDIS_URL (redis://:PASSWORD@host:port/0)") from None
        except redis.RedisError as error:
            if _certificate_refused(error):
                raise StartupError(
                    f"Redis at {where} presented a certificate that failed verification: "
                    "for a provider's self-signed one set REDIS_TLS_VERIFY=false (see the "
                    "README for the risk)") from None
            raise Unreachable(_reason(error)) from None

    try:
        _retry(attempt, lambda why: f"Redis is not reachable at {where} ({why}); retrying",
               "Redis", longest_wait)
    finally:
        client.close()


def _retry(attempt: Callable[[], None], line: Callable[[str], str], what: str,
           longest_wait: float) -> None:
    failures = 0

    def before_sleep(state: RetryCallState) -> None:
        nonlocal failures
        failures += 1
        error = state.outcome.exception() if state.outcome else None
        pause = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s in %g s", line(str(error)), pause)  # one line per failed attempt

    for trying in Retrying(retry=retry_if_exception_type(Unreachable), reraise=True,
                           wait=wait_exponential(multiplier=FIRST_WAIT, max=longest_wait),
                           before_sleep=before_sleep):
        with trying:
            attempt()
    if failures:
        log.info("%s is reachable again after %d failed attempts; starting", what, failures)


def _silent(name: str) -> logging.Logger:
    """A logger of this module's that writes nothing, for a library's own failure lines."""
    silent = logging.getLogger(f"{__name__}.{name}")
    silent.propagate = False
    if not silent.handlers:
        silent.addHandler(logging.NullHandler())
    return silent


def _certificate_refused(error: BaseException) -> bool:
    # redis-py wraps ssl's error in a ConnectionError whose text keeps OpenSSL's reason.
    return "CERTIFICATE_VERIFY_FAILED" in str(error) or isinstance(
        error.__cause__ or error.__context__, ssl.SSLCertVerificationError)


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)  # urllib's URLError wraps the socket error
    text = str(reason or error) or type(error).__name__
    return text.splitlines()[0][:160]
