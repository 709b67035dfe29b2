"""Settings, read from the environment and `.env`, validated once at start."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EXOTEL_REGIONS = {
    "singapore": "https://api.exotel.com",
    "mumbai": "https://api.in.exotel.com",
}
SLACK_API_DEFAULT = "https://slack.com/api/"
LINK_TTL = timedelta(hours=24)
TRY_IT = "No Slack workspace yet? Try the bot in a browser: uv run python -m bot try"

# How to fix each setting, shown beside its problem when the bot refuses to start.
HINTS = {
    "SLACK_BOT_TOKEN": "the Bot User OAuth Token (xoxb-...) from your Slack app's "
    "OAuth & Permissions page",
    "SLACK_SIGNING_SECRET": "the Signing Secret from your Slack app's Basic Information page "
    "(or set SLACK_APP_TOKEN to run in Socket Mode)",
    "SLACK_APP_TOKEN": "an app-level token (xapp-...) with connections:write, for Socket Mode",
    "EXOTEL_API_KEY": "the API key from Exotel's dashboard, API settings",
    "EXOTEL_API_TOKEN": "the API token from Exotel's dashboard, API settings",
    "EXOTEL_ACCOUNT_SID": "your Exotel account SID, from Exotel's dashboard, API settings",
    "EXOTEL_REGION": "'singapore' (api.exotel.com) or 'mumbai' (api.in.exotel.com)",
    "EXOTEL_BASE_URL": "a URL such as https://api.exotel.com (scheme and host only)",
    "REDIS_URL": "a URL such as redis://localhost:6379/0, rediss://:PASSWORD@host:port (TLS) "
    "or unix:///path/to/redis.sock, or leave it unset for the embedded Redis",
    "REDIS_TLS_VERIFY": "true (check the server's certificate) or false (accept a self-signed one)",
    "LOG_LEVEL": "DEBUG, INFO, WARNING, ERROR or CRITICAL",
    "WEB_CONCURRENCY": "a whole number of gunicorn processes, 1 or more",
    "WEB_THREADS": "a whole number of threads per gunicorn process, 1 or more",
    "ONBOARD_DATA_DIR": "a directory the bot may write to",
    "PORT": "a TCP port number, 1-65535",
    "WEB_HOST": "the address HTTP mode listens on: 0.0.0.0 (every interface) or 127.0.0.1 "
    "(this machine only)",
    "REMINDER_LEAD": "seconds (3600) or an ISO-8601 duration (PT1H), from 0 up to just under 24 h",
    "ALLOWED_USER_IDS": "Slack user ids separated by commas (U0123,U0456), or empty for everyone",
    "ALLOWED_USERGROUP_IDS": "Slack user group ids separated by commas (S0123), or empty",
    "ALLOWED_CHANNEL_IDS": "Slack channel ids separated by commas (C0123), or empty",
    "ADMIN_USER_IDS": "Slack user ids separated by commas (U0123)",
    "CHECK_TOKEN_RESTRICTED": "true or false",
    "WORKER_PROCESSES": "a whole number of worker processes taking commands, 1 to 64",
    "LOG_FORMAT": "text or json",
    "AUDIT_RETENTION_DAYS": "a whole number of days, 1 or more",
    "MAX_LINKS_PER_USER_PER_DAY": "a whole number, 1 or more",
    "METRICS_TOKEN": "a long random string (openssl rand -hex 32) that Prometheus sends as "
    "'Authorization: Bearer <token>', or leave it unset to serve no /metrics",
    "WORKER_METRICS_PORT": "a TCP port number for the worker's /metrics, 1-65535, or 0 for none "
    "(it needs METRICS_TOKEN)",
    "CHECK_TOKEN_PER_MINUTE": "a whole number of /check-token commands per user a minute, "
    "1 or more",
    "ISSUE_RESERVE": "the share of Exotel's budget kept for issuing, from 0 up to just under 1 "
    "(0.5)",
    "STATUS_POLL_SECONDS": "a whole number of seconds between status polls, 1 or more",
    "STATUS_POLL_SHARE": "a fraction of EXOTEL_RATE_PER_MINUTE above 0 and at most 1 (0.25)",
    "WEBHOOK_URLS": "https:// URLs separated by commas (http:// only for 127.0.0.1 or "
    "localhost), or empty for no webhooks",
    "WEBHOOK_SECRET": "whsec_ followed by the base64 of 24 to 64 random bytes "
    "(echo whsec_$(openssl rand -base64 32))",
    "WEBHOOK_RETRY_SCHEDULE": "pauses before each retry separated by commas, each a whole "
    "number with s, m or h (5s,5m,30m,2h,5h,10h,10h)",
    "DIGEST_CHANNEL": "a Slack channel id (C0123 or G0123) the bot is a member of, or leave "
    "it unset for no digest",
    "DIGEST_CRON": "a cron expression of five fields: minute hour day-of-month month "
    "day-of-week (0 9 * * 1: Mondays at 9:00)",
    "DIGEST_TIMEZONE": "an IANA time zone name such as UTC, Asia/Kolkata or Europe/London",
}
DEFAULT_DIGEST_CRON = "0 9 * * 1"
# A Slack channel id the digest may be posted to: public (C) or private (G), not a DM.
DIGEST_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,20}")
DEFAULT_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,10h"
_UNITS = {"s": 1, "m": 60, "h": 3600}


# Comma-separated in the environment ("U1,U2"), not JSON.
IdList = Annotated[list[str], NoDecode]


class SettingsError(Exception):
    """Settings are missing or malformed; the message names every problem and its fix."""


class Settings(BaseSettings):
    # An empty variable counts as unset: platforms (Heroku's app.json form) set blank ones.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False,
                                      env_ignore_empty=True)

    slack_bot_token: SecretStr = Field(alias="SLACK_BOT_TOKEN", min_length=1)
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    # Declared after SLACK_APP_TOKEN: its check reads that value.
    slack_signing_secret: SecretStr | None = Field(
        default=None, alias="SLACK_SIGNING_SECRET", validate_default=True
    )
    slack_api_url: str = Field(default=SLACK_API_DEFAULT, alias="SLACK_API_URL")

    exotel_api_key: str = Field(alias="EXOTEL_API_KEY", min_length=1)
    exotel_api_token: SecretStr = Field(alias="EXOTEL_API_TOKEN", min_length=1)
    exotel_account_sid: str = Field(
        alias="EXOTEL_ACCOUNT_SID", pattern=r"^[A-Za-z0-9_-]+$"
    )
    exotel_region: Literal["singapore", "mumbai"] = Field(
        default="singapore", alias="EXOTEL_REGION"
    )
    exotel_base_url: str | None = Field(default=None, alias="EXOTEL_BASE_URL")
    # Seconds to wait for one Exotel answer; a whole command is bounded by EXOTEL_DEADLINE.
    exotel_timeout: float = Field(default=8.0, gt=0, alias="EXOTEL_TIMEOUT")
    exotel_deadline: float = Field(default=20.0, gt=0, alias="EXOTEL_DEADLINE")
    # Exotel allows about 200 requests a minute per account, shared by every bot process.
    exotel_rate_per_minute: int = Field(default=200, gt=0, alias="EXOTEL_RATE_PER_MINUTE")

    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    # false accepts any certificate on a rediss:// URL (managed Redis that self-signs).
    redis_tls_verify: bool = Field(default=True, alias="REDIS_TLS_VERIFY")
    # Where the embedded Redis (used when REDIS_URL is unset) keeps its data file.
    data_dir: Path = Field(default=Path("data"), alias="ONBOARD_DATA_DIR")
    port: int = Field(default=3000, ge=1, le=65535, alias="PORT")
    # HTTP mode's address: every interface for a platform; loopback for `python -m bot try`.
    web_host: str = Field(default="0.0.0.0", alias="WEB_HOST", min_length=1)
    reminder_lead: timedelta = Field(default=timedelta(hours=1), alias="REMINDER_LEAD")
    # Worker processes per `python -m bot worker`, each running one job at a time: 4 keep
    # up with Exotel's 200 requests a minute, since most of a job is waiting on Exotel.
    worker_processes: int = Field(default=4, ge=1, le=64, alias="WORKER_PROCESSES")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", alias="LOG_LEVEL")
    log_format: Literal["text", "json"] = Field(default="text", alias="LOG_FORMAT")

    # Who may do what; each a comma-separated list of Slack ids, empty meaning everyone.
    allowed_user_ids: IdList = Field(default_factory=list, alias="ALLOWED_USER_IDS")
    allowed_usergroup_ids: IdList = Field(default_factory=list, alias="ALLOWED_USERGROUP_IDS")
    allowed_channel_ids: IdList = Field(default_factory=list, alias="ALLOWED_CHANNEL_IDS")
    admin_user_ids: IdList = Field(default_factory=list, alias="ADMIN_USER_IDS")
    check_token_restricted: bool = Field(default=False, alias="CHECK_TOKEN_RESTRICTED")
    audit_retention_days: int = Field(default=90, ge=1, alias="AUDIT_RETENTION_DAYS")
    max_links_per_user_per_day: int = Field(default=200, ge=1,
                                            alias="MAX_LINKS_PER_USER_PER_DAY")
    # Fair use of Exotel's budget: one member's checks cannot spend it, and checks, status
    # polls and reminders together never take the share of each minute kept for issuing.
    check_token_per_minute: int = Field(default=30, ge=1, alias="CHECK_TOKEN_PER_MINUTE")
    issue_reserve: float = Field(default=0.5, ge=0, lt=1, alias="ISSUE_RESERVE")
    # How often live links' statuses are polled, and at most what share of Exotel's budget
    # the polls take (issuing comes first: polls only use a window with room to spare).
    status_poll_seconds: int = Field(default=300, ge=1, alias="STATUS_POLL_SECONDS")
    status_poll_share: float = Field(default=0.25, gt=0, le=1, alias="STATUS_POLL_SHARE")
    # gunicorn's processes and threads (HTTP mode); checked here so a typo stops the bot early.
    web_concurrency: int = Field(default=1, ge=1, alias="WEB_CONCURRENCY")
    web_threads: int = Field(default=32, ge=1, alias="WEB_THREADS")
    # /metrics answers only requests that carry it as a bearer token; unset: no /metrics.
    metrics_token: SecretStr | None = Field(default=None, alias="METRICS_TOKEN", min_length=16)
    # `python -m bot worker` serves its own /metrics on this port (0: none); needs the token.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535, alias="WORKER_METRICS_PORT")
    # Signed webhooks (Standard Webhooks): where each link event goes, the key that signs
    # it, and the pauses (seconds) before each retry of a delivery that failed.
    webhook_urls: IdList = Field(default_factory=list, alias="WEBHOOK_URLS")
    # Declared after WEBHOOK_URLS: its check reads that value.
    webhook_secret: SecretStr | None = Field(default=None, alias="WEBHOOK_SECRET",
                                             validate_default=True)
    webhook_retry_schedule: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: parse_schedule(DEFAULT_RETRY_SCHEDULE),
        alias="WEBHOOK_RETRY_SCHEDULE")

    # The managers' digest (bot.domain.digest): posted to DIGEST_CHANNEL on DIGEST_CRON, read
    # in DIGEST_TIMEZONE; no digest while DIGEST_CHANNEL is unset.
    digest_channel: str | None = Field(default=None, alias="DIGEST_CHANNEL")
    digest_cron: str = Field(default=DEFAULT_DIGEST_CRON, alias="DIGEST_CRON")
    digest_timezone: str = Field(default="UTC", alias="DIGEST_TIMEZONE")

    @field_validator("allowed_user_ids", "allowed_usergroup_ids", "allowed_channel_ids",
                     "admin_user_ids", "webhook_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("exotel_region", mode="before")
    @classmethod
    def _lower_region(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("exotel_base_url", "slack_api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_redis_url(value)
        return value

    @field_validator("slack_signing_secret")
    @classmethod
    def _http_mode_needs_signing_secret(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if value is None and info.data.get("slack_app_token") is None:
            raise ValueError("missing (it is needed unless SLACK_APP_TOKEN is set)")
        return value

    @field_validator("worker_metrics_port")
    @classmethod
    def _worker_metrics_need_the_token(cls, value: int, info: ValidationInfo) -> int:
        if value and info.data.get("metrics_token") is None:
            raise ValueError("needs METRICS_TOKEN, which Prometheus must send to read it")
        return value

    @field_validator("reminder_lead", mode="before")
    @classmethod
    def _plain_seconds(cls, value: object) -> object:
        # Environment values are strings; pydantic reads "3600" as a clock time, not seconds.
        if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
            return float(value)
        return value

    @field_validator("reminder_lead")
    @classmethod
    def _lead_within_a_day(cls, value: timedelta) -> timedelta:
        if not timedelta(0) <= value < LINK_TTL:
            raise ValueError("must be from 0 up to just under 24 hours")
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _webhook_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            check_webhook_url(url)
        if len(set(value)) != len(value):
            raise ValueError("names a URL twice")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            if info.data.get("webhook_urls"):
                raise ValueError("missing (it is needed when WEBHOOK_URLS is set)")
            return value
        check_webhook_secret(value.get_secret_value())
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _retry_schedule(cls, value: object) -> object:
        return parse_schedule(value) if isinstance(value, str) else value

    @field_validator("digest_channel")
    @classmethod
    def _digest_channel(cls, value: str | None) -> str | None:
        if value is not None and not DIGEST_CHANNEL_ID.fullmatch(value.strip()):
            raise ValueError("is not a Slack channel id (C… or G…)")
        return value.strip() if value is not None else None

    @field_validator("digest_cron")
    @classmethod
    def _digest_cron(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("digest_timezone")
    @classmethod
    def _digest_timezone(cls, value: str) -> str:
        zone_of(value)
        return value.strip()

    @property
    def digest_zone(self) -> ZoneInfo:
        return zone_of(self.digest_timezone)

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def issue_reserve_slots(self) -> int:
        """Requests of each minute's Exotel budget only issuing may use."""
        return int(self.exotel_rate_per_minute * self.issue_reserve)

    @property
    def exotel_url(self) -> str:
        return (self.exotel_base_url or EXOTEL_REGIONS[self.exotel_region]).rstrip("/")

    def secrets(self) -> list[str]:
        """Every secret value, so logs and messages can be checked and scrubbed of them."""
        values = [self.slack_bot_token, self.slack_signing_secret, self.slack_app_token,
                  self.exotel_api_token, self.metrics_token, self.webhook_secret]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]


def check_redis_url(url: str) -> None:
    """Raise ValueError unless redis-py can connect with `url` as written."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
    try:
        parts.port  # noqa: B018 (parsing it is the check: a port that is not a number raises)
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("needs the socket's path (unix:///path/to/redis.sock)")
        return
    if not parts.hostname:
        raise ValueError("needs a host name (redis://HOST:6379/0)")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"names database {db!r}; it must be a number (/0)")


def check_webhook_url(url: str) -> None:
    """Raise ValueError unless `url` is https://, or http:// to a loopback host (tests)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{url!r} is not a URL (https://HOST/PATH)")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and _loopback(parts.hostname):
        return
    raise ValueError("each URL must start with https:// (http:// only for a loopback host)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_secret(secret: str) -> None:
    """Raise ValueError unless `secret` is whsec_ and the base64 of 24 to 64 bytes."""
    if not secret.startswith("whsec_"):
        raise ValueError("must start with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"holds {len(key)} bytes; it must hold 24 to 64")


def check_cron(expression: str) -> str:
    """`expression` with its whitespace folded, if it is a cron expression of five fields
    (minute hour day-of-month month day-of-week) croniter reads; else ValueError."""
    folded = " ".join(expression.split())
    if len(folded.split(" ")) != 5:
        raise ValueError(f"has {len(folded.split())} fields; a cron expression has five "
                         "(minute hour day-of-month month day-of-week)")
    if not croniter.is_valid(folded):
        raise ValueError(f"{folded!r} is not a cron expression croniter reads")
    try:
        croniter(folded, datetime(2000, 1, 1)).get_next(datetime)  # "0 0 30 2 *" never comes
    except CroniterError:
        raise ValueError(f"{folded!r} names no date that exists") from None
    return folded


def zone_of(name: str) -> ZoneInfo:
    """The IANA time zone `name` (ValueError if there is none of that name)."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name[:60]!r} is not an IANA time zone name") from None


def parse_schedule(text: object) -> list[int]:
    """'5s,5m,2h' as seconds ([5, 300, 7200]); ValueError for anything else."""
    if not isinstance(text, str):
        raise ValueError("must be a list such as 5s,5m,30m")
    pauses = []
    for part in (piece.strip() for piece in text.split(",")):
        found = re.fullmatch(r"(\d+)([smh])", part)
        if not found or int(found.group(1)) == 0:
            raise ValueError(f"has {part!r}; each pause is a whole number above 0 with "
                             "s, m or h")
        pauses.append(int(found.group(1)) * _UNITS[found.group(2)])
    if len(pauses) > 20:
        raise ValueError("has more than 20 retries")
    return pauses


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings, or raise SettingsError naming every problem."""
    try:
        # Overrides are by alias (REDIS_URL=...), which pydantic's signature doesn't show.
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = ["onboard-bot cannot start. Fix these settings (environment or .env):"]
    for error in exc.errors(include_input=False, include_url=False):
        name = str(error["loc"][0]).upper()
        problem = "missing" if error["type"] == "missing" else error["msg"]
        problem = problem.removeprefix("Value error, ")
        lines.append(f"- {name}: {problem}. Set it to {HINTS.get(name, 'a valid value')}.")
    if any(error["type"] == "missing" for error in exc.errors()):
        lines.append(TRY_IT)  # a first run, most likely: there is a way with no settings
    return "\n".join(lines)
