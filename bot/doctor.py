"""`python -m bot doctor`: check each thing the bot depends on, one line each.

    ✓ name: what was found
    ✗ name: the problem — how to fix it

Each check is a small function returning a `Check`, so tests can call them one by one.
Nothing here starts a server or the embedded Redis: the doctor looks, it does not run.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
from rq import Queue, Worker
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.core import exotel_client, slack_client
from bot.exotel import (
    ExotelAuthError,
    ExotelBadRequest,
    ExotelError,
    ExotelNotFound,
)
from bot.logs import scrub
from bot.reminders import QUEUE_NAME
from bot.settings import HINTS, Settings

MANIFEST = Path(__file__).resolve().parent.parent / "manifest.yml"
# Never issued by Exotel: a validate call with it can only answer "unknown token" (404/400)
# when the credentials are good, or 401/403 when they are not.
PROBE_TOKEN = "onboard-bot-doctor-probe-0000"
SCOPES_HEADER = "x-oauth-scopes"
# auth.test errors that mean the token itself is wrong, revoked or for a removed app.
BAD_TOKEN_ERRORS = {"invalid_auth", "not_authed", "token_revoked", "token_expired",
                    "account_inactive", "not_allowed_token_type"}
REDIS_TIMEOUT = 3.0
NOISY_LOGGERS = ("slack_sdk", "bot.exotel", "urllib3")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found, or what is wrong
    fix: str = ""

    def line(self) -> str:
        if self.ok:
            return f"✓ {self.name}: {self.detail}"
        return f"✗ {self.name}: {self.detail} — {self.fix}"


def run_doctor(settings: Settings, out: TextIO | None = None) -> int:
    """Run every check, print one line each; 0 when all pass, 1 otherwise."""
    out = out or sys.stdout
    failed = False
    with _quiet(NOISY_LOGGERS):
        for check in _checks(settings):  # each line as soon as known: some checks wait
            # A last line of defence: no check means to print a secret; none does.
            print(scrub(mask_urls(check.line()), settings.secrets()), file=out, flush=True)
            failed = failed or not check.ok
    return 1 if failed else 0


def _checks(settings: Settings) -> Iterator[Check]:
    yield check_settings(settings)
    yield from check_slack(settings)
    yield check_exotel(settings)
    yield check_redis(settings)
    yield check_worker(settings)


@contextmanager
def _quiet(names: Iterable[str]) -> Iterator[None]:
    """Each failure gets its own line with a fix; the libraries' logs would only repeat it."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def check_settings(settings: Settings) -> Check:
    # load_settings already refused anything invalid (exit 2, before the doctor ran).
    mode = "Socket Mode" if settings.socket_mode else "HTTP mode"
    return Check("settings", True, f"valid ({mode}, Exotel at {settings.exotel_url})")


# Slack ---------------------------------------------------------------------------------


def check_slack(settings: Settings, manifest: Path = MANIFEST) -> list[Check]:
    """auth.test with the bot token, then its granted scopes against the manifest's."""
    try:
        response = slack_client(settings).auth_test()
    except SlackApiError as error:
        code = str(error.response.get("error") or "unknown_error")
        return [_slack_refused(code), _scopes_unchecked()]
    except (SlackClientError, OSError) as error:
        problem = f"could not reach Slack at {settings.slack_api_url} ({_reason(error)})"
        fix = "check the network, a proxy, or SLACK_API_URL if you set it"
        return [Check("slack", False, problem, fix), _scopes_unchecked()]
    who = f"bot {response.get('user')} ({response.get('user_id')})"
    where = f"workspace {response.get('team')} ({response.get('team_id')})"
    auth = Check("slack", True, f"auth.test ok: {who} in {where}")
    return [auth, check_scopes(_header(response.headers, SCOPES_HEADER),
                               manifest_bot_scopes(manifest))]


def _slack_refused(code: str) -> Check:
    if code in BAD_TOKEN_ERRORS:
        return Check("slack", False, f"Slack rejected the bot token ({code})",
                     f"set SLACK_BOT_TOKEN to {HINTS['SLACK_BOT_TOKEN']}; reinstall the app "
                     "if the token was revoked")
    return Check("slack", False, f"auth.test failed: {code}",
                 "see https://api.slack.com/methods/auth.test for what this error means")


def _scopes_unchecked() -> Check:
    return Check("slack scopes", False, "not checked: auth.test did not succeed",
                 "fix the Slack check above first")


def check_scopes(granted_header: str | None, wanted: list[str] | None) -> Check:
    """The granted scopes (auth.test's x-oauth-scopes header) against manifest.yml's."""
    if wanted is None:
        return Check("slack scopes", True, f"cannot tell: {MANIFEST.name} not found beside "
                     "the bot, so there is nothing to compare with")
    if granted_header is None:
        # Slack always sends it; a proxy or a stand-in may not. Not knowing is no failure.
        return Check("slack scopes", True, "cannot tell: Slack's answer had no "
                     f"{SCOPES_HEADER} header (manifest asks for {', '.join(wanted)})")
    granted = {s.strip() for s in granted_header.split(",") if s.strip()}
    missing = [scope for scope in wanted if scope not in granted]
    if missing:
        return Check("slack scopes", False, f"the bot token lacks {', '.join(missing)}",
                     "add them under OAuth & Permissions (or update the app from "
                     f"{MANIFEST.name}) and reinstall the app to the workspace")
    extra = sorted(granted - set(wanted))
    note = f" (also granted: {', '.join(extra)})" if extra else ""
    return Check("slack scopes", True, f"all {len(wanted)} of {MANIFEST.name}'s bot scopes "
                 f"granted{note}")


def _header(headers: Mapping[str, object], name: str) -> str | None:
    # Header names are case-insensitive; slack_sdk hands them over as a plain dict.
    for key, value in headers.items():
        if key.lower() == name:
            return str(value[0] if isinstance(value, list) else value)
    return None


def manifest_bot_scopes(manifest: Path) -> list[str] | None:
    """oauth_config.scopes.bot of the Slack app manifest, or None without the file."""
    try:
        text = manifest.read_text(encoding="utf-8")
    except OSError:
        return None
    return yaml_list(text, ["oauth_config", "scopes", "bot"])


def yaml_list(text: str, path: list[str]) -> list[str]:
    """The list of plain scalars at `path` in block-style YAML.

    Just enough YAML for the manifest (nested mappings by indentation, `- item` or
    `[a, b]` lists, comments, quotes) that the bot needs no YAML library for one list."""
    keys: list[tuple[int, str]] = []  # the mappings the current line is inside
    found: list[str] = []
    for raw in text.splitlines():
        line = _without_comment(raw).rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        if body == "-" or body.startswith("- "):
            # YAML lets a list sit at its key's own indentation.
            while keys and keys[-1][0] > indent:
                keys.pop()
            if [k for _, k in keys] == path:
                found.append(_scalar(body[1:]))
            continue
        key, colon, value = body.partition(":")
        if not colon or (value and not value.startswith(" ")):
            continue  # not a `key:` line (a scalar that merely contains a colon)
        while keys and keys[-1][0] >= indent:
            keys.pop()
        keys.append((indent, _scalar(key)))
        value = value.strip()
        if [k for _, k in keys] == path and value.startswith("[") and value.endswith("]"):
            found.extend(_scalar(v) for v in value[1:-1].split(",") if v.strip())
    return found


def _without_comment(line: str) -> str:
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


# Exotel --------------------------------------------------------------------------------


class _NoLimit:
    """One call needs no rate limit, and the shared limiter lives in Redis, maybe down."""

    def acquire(self, deadline: float) -> None:
        return None


def check_exotel(settings: Settings) -> Check:
    """One validate call with a made-up token: only the credentials decide the answer."""
    client = exotel_client(settings, _NoLimit())
    where = settings.exotel_url
    try:
        status = client.token_status(PROBE_TOKEN)
    except ExotelAuthError as error:
        return Check("exotel", False, f"{where} rejected the credentials (HTTP "
                     f"{error.http_status})", "check EXOTEL_API_KEY, EXOTEL_API_TOKEN and "
                     "EXOTEL_ACCOUNT_SID (Exotel dashboard, API settings) and EXOTEL_REGION")
    except (ExotelNotFound, ExotelBadRequest) as error:
        return Check("exotel", True, f"credentials accepted by {where} (a made-up token got "
                     f"HTTP {error.http_status}, as it should)")
    except ExotelError as error:
        return Check("exotel", False, f"{where}: {error}",
                     "check EXOTEL_REGION or EXOTEL_BASE_URL, and the network; "
                     "retry if Exotel is having trouble")
    return Check("exotel", True, f"credentials accepted by {where} (it even knew the "
                 f"made-up token: {status})")


# Redis and the worker ------------------------------------------------------------------


def check_redis(settings: Settings) -> Check:
    """Ping, version, and whether the data survives a Redis restart."""
    if not settings.redis_url:
        return Check("redis", True, "REDIS_URL is not set: the bot starts an embedded Redis "
                     f"(data in {settings.data_dir}/) while it runs; nothing to check now")
    where = safe_url(settings.redis_url)
    client = _redis(settings.redis_url, decode=True)
    try:
        client.ping()
        version = _version(client)
    except redis.AuthenticationError:
        return Check("redis", False, f"{where} refused the password",
                     "put the right password in REDIS_URL (redis://:PASSWORD@host:port/0)")
    except redis.RedisError as error:
        return Check("redis", False, f"cannot reach {where} ({_reason(error)})",
                     "start Redis there, fix REDIS_URL, or unset REDIS_URL for the "
                     "embedded Redis")
    return Check("redis", True, f"{where} answers, Redis {version}; {_persistence(client)}")


def _version(client: redis.Redis) -> str:
    try:
        return str(client.info("server").get("redis_version", "unknown"))
    except redis.ResponseError:
        return "of unknown version (INFO is disabled)"  # some hosted Redis rename it


def _persistence(client: redis.Redis) -> str:
    try:
        save = client.config_get("save").get("save", "")
        aof = client.config_get("appendonly").get("appendonly", "no")
    except redis.ResponseError:
        return "persistence unknown (CONFIG is disabled on this server)"
    kinds = [f"RDB snapshots (save {save})"] if save.strip() else []
    if aof == "yes":
        kinds.append("append-only file")
    if not kinds:
        return ("does NOT persist to disk: tracked links and scheduled reminders are lost "
                "if Redis restarts (turn on appendonly)")
    return "persists to disk: " + " and ".join(kinds)


def check_worker(settings: Settings) -> Check:
    """At least one RQ worker registered (and so heartbeating) for the reminder queue."""
    if not settings.redis_url:
        return Check("reminder worker", True, "cannot tell with the embedded Redis; "
                     "`python -m bot` runs a worker beside itself")
    fix = "start it: python -m bot worker"
    # RQ stores pickled jobs: its connection must not decode replies.
    queue = Queue(QUEUE_NAME, connection=_redis(settings.redis_url, decode=False))
    try:
        workers = Worker.all(queue=queue)
    except redis.RedisError:
        return Check("reminder worker", False, "cannot tell: Redis is not answering",
                     f"fix Redis first, then {fix}")
    if not workers:
        return Check("reminder worker", False, f"no worker is listening on {QUEUE_NAME}; "
                     "expiry reminders will not be sent", fix)
    return Check("reminder worker", True, f"{len(workers)} on {QUEUE_NAME} "
                 f"({', '.join(_describe(w) for w in workers)})")


def _describe(worker: Worker) -> str:
    beat = worker.last_heartbeat
    if beat is None:
        return worker.name
    if beat.tzinfo is None:  # RQ's own parser says UTC; older records may be naive
        beat = beat.replace(tzinfo=UTC)
    ago = max((datetime.now(UTC) - beat).total_seconds(), 0.0)
    return f"{worker.name}, heartbeat {ago:.0f} s ago"


def _redis(url: str, *, decode: bool) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT,
                                socket_timeout=REDIS_TIMEOUT, decode_responses=decode)


# Query parameters whose values are credentials, by name (password, api_key, token, ...).
_SECRET_PARAM = re.compile(r"pass|pwd|token|key|secret|auth|sig|cred", re.I)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+")


def safe_url(url: str) -> str:
    """The URL with every credential hidden (userinfo, secret-looking query parameters), to
    show where the doctor looked."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon else f"***@{hostport}"
    query = "&".join(_masked_param(pair) for pair in parts.query.split("&")) if parts.query \
        else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _masked_param(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    return f"{name}=***" if equals and _SECRET_PARAM.search(unquote(name)) else pair


def mask_urls(text: str) -> str:
    """`text` with each URL in it passed through safe_url."""
    return _URL.sub(lambda found: safe_url(found.group()), text)


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)  # urllib's URLError wraps the socket error
    text = str(reason or error) or type(error).__name__
    return text.splitlines()[0][:160]
