"""`python -m bot doctor`: check each thing the bot depends on, one line each.

    ✓ name: what was found
    ✗ name: the problem — how to fix it
    – name: skipped (why it was not checked)

Each check is a small function returning a `Check`, so tests can call them one by one.
Before each, its name goes to the progress stream (stderr), so a slow one is visible; each
is bounded by a timeout. Nothing here starts a server or the embedded Redis: the doctor
looks, it does not run. With REDIS_URL unset it checks the embedded Redis of a running
`python -m bot`, found as that process finds it (`embedded_redis.running`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import redis
from rq import Worker
from rq.worker import BaseWorker
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.domain.store import StoreUnavailable, connect
from bot.domain.webhooks import Webhooks
from bot.engine.registry import (
    COMMANDS_QUEUE,
    REMINDERS_QUEUE,
    STATUS_QUEUE,
    WEBHOOKS_QUEUE,
    queue_names,
)
from bot.exotel.client import (
    ExotelAuthError,
    ExotelBadRequest,
    ExotelError,
    ExotelNotFound,
)
from bot.runtime import embedded_redis
from bot.runtime.composition import build_webhooks, exotel_client
from bot.settings import HINTS, Settings
from bot.telemetry.logs import mask_urls, safe_url, scrub

MANIFEST = Path(__file__).resolve().parents[2] / "manifest.yml"
# Never issued by Exotel: a validate call with it can only answer "unknown token" (404/400)
# when the credentials are good, or 401/403 when they are not.
PROBE_TOKEN = "onboard-bot-doctor-probe-0000"
SCOPES_HEADER = "x-oauth-scopes"
# auth.test errors that mean the token itself is wrong, revoked or for a removed app.
BAD_TOKEN_ERRORS = {"invalid_auth", "not_authed", "token_revoked", "token_expired",
                    "account_inactive", "not_allowed_token_type"}
REDIS_TIMEOUT = 3.0
SLACK_TIMEOUT = 5  # seconds for one Slack call; the doctor does not retry
# Exotel's answer and the whole Exotel check (its retries included), at most.
EXOTEL_TIMEOUT = 5.0
EXOTEL_DEADLINE = 10.0
NOISY_LOGGERS = ("slack_sdk", "bot.exotel.client", "urllib3")
# What goes undone while no worker takes a queue.
UNDONE = {COMMANDS_QUEUE: "commands and buttons are not answered",
          REMINDERS_QUEUE: "expiry reminders are not sent",
          STATUS_QUEUE: "links' status is not polled (no DM when one is used)",
          WEBHOOKS_QUEUE: "webhook events are not delivered"}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool  # a skipped check is no failure
    detail: str  # what was found, what is wrong, or why it was not checked
    fix: str = ""
    skipped: bool = False

    def line(self) -> str:
        if self.skipped:
            return f"– {self.name}: skipped ({self.detail})"
        if self.ok:
            return f"✓ {self.name}: {self.detail}"
        return f"✗ {self.name}: {self.detail} — {self.fix}"


def skipped(name: str, why: str) -> Check:
    return Check(name, True, why, skipped=True)


# What each step checks, announced before it runs, and the checks it returns.
Step = tuple[str, Callable[[Settings], Sequence[Check]]]
STEPS: list[Step] = [
    ("settings", lambda s: [check_settings(s)]),
    ("slack", lambda s: check_slack(s)),
    ("slack app token", lambda s: [check_app_token(s)]),
    ("exotel", lambda s: [check_exotel(s)]),
    ("redis", lambda s: [check_redis(s)]),
    ("redis persistence", lambda s: [check_persistence(s)]),
    ("workers", lambda s: [check_workers(s)]),
    ("webhooks", lambda s: check_webhooks(s)),
]


def run_doctor(settings: Settings, out: TextIO | None = None,
               progress: TextIO | None = None) -> int:
    """Run every check, print one line each; 0 when none fails, 1 otherwise.

    Results go to `out` (stdout), each step's name as it starts to `progress` (stderr)."""
    out = out or sys.stdout
    progress = progress or sys.stderr
    settings = with_running_redis(settings)
    failed = False
    with _quiet(NOISY_LOGGERS):
        for label, run in STEPS:
            print(f"… checking {label}", file=progress, flush=True)
            for check in run(settings):
                # A last line of defence: no check means to print a secret; none does.
                print(scrub(mask_urls(check.line()), settings.secrets()), file=out, flush=True)
                failed = failed or not check.ok
    return 1 if failed else 0


def with_running_redis(settings: Settings) -> Settings:
    """With REDIS_URL unset: the embedded Redis of a running `python -m bot`, if one runs."""
    if settings.redis_url:
        return settings
    url = embedded_redis.running(settings.data_dir)
    return settings.model_copy(update={"redis_url": url}) if url else settings


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
        response = _slack(settings, settings.slack_bot_token.get_secret_value()).auth_test()
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


def _slack(settings: Settings, token: str) -> WebClient:
    # No retry handlers: one bounded attempt, so the doctor answers within SLACK_TIMEOUT.
    return WebClient(token=token, base_url=settings.slack_api_url, timeout=SLACK_TIMEOUT)


def check_app_token(settings: Settings) -> Check:
    """apps.connections.open with SLACK_APP_TOKEN, as Socket Mode calls it at start."""
    name = "slack app token"
    if settings.slack_app_token is None:
        return skipped(name, "SLACK_APP_TOKEN is not set: HTTP mode needs none")
    token = settings.slack_app_token.get_secret_value()
    fix = (f"set SLACK_APP_TOKEN to {HINTS['SLACK_APP_TOKEN']} (Basic Information, "
           "App-Level Tokens)")
    try:
        _slack(settings, token).apps_connections_open(app_token=token)
    except SlackApiError as error:
        code = str(error.response.get("error") or "unknown_error")
        return Check(name, False, f"Slack rejected the app token ({code})", fix)
    except (SlackClientError, OSError) as error:
        return Check(name, False, f"could not reach Slack at {settings.slack_api_url} "
                     f"({_reason(error)})", "check the network, a proxy, or SLACK_API_URL")
    return Check(name, True, "apps.connections.open ok: Socket Mode can connect")


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
        return skipped("slack scopes", f"cannot tell: {MANIFEST.name} not found beside "
                       "the bot, so there is nothing to compare with")
    if granted_header is None:
        # Slack always sends it; a proxy or a stand-in may not. Not knowing is no failure.
        return skipped("slack scopes", "cannot tell: Slack's answer had no "
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
    bounded = settings.model_copy(update={
        "exotel_timeout": min(settings.exotel_timeout, EXOTEL_TIMEOUT),
        "exotel_deadline": min(settings.exotel_deadline, EXOTEL_DEADLINE)})
    client = exotel_client(bounded, _NoLimit())
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
    """Ping and version (`check_persistence` says whether the data survives a restart)."""
    if not settings.redis_url:
        return skipped("redis", "REDIS_URL is not set and no `python -m bot` is running its "
                       f"embedded Redis (data in {settings.data_dir}/): start the bot with "
                       "`python -m bot`, then run the doctor again")
    where = safe_url(settings.redis_url)
    client = _redis(settings, decode=True)
    try:
        client.ping()
        version = _version(client)
    except redis.AuthenticationError:
        return Check("redis", False, f"{where} refused the password",
                     "put the right password in REDIS_URL (redis://:PASSWORD@host:port/0)")
    except redis.RedisError as error:
        fix = ("start Redis there, fix REDIS_URL, or unset REDIS_URL for the embedded Redis")
        if "certificate verify failed" in str(error):
            fix = ("give Redis a certificate a public CA signed, or set REDIS_TLS_VERIFY=false "
                   "to accept the provider's self-signed one (see the README for the risk)")
        return Check("redis", False, f"cannot reach {where} ({_reason(error)})", fix)
    return Check("redis", True, f"{where} answers, Redis {version}")


def _version(client: redis.Redis) -> str:
    try:
        return str(client.info("server").get("redis_version", "unknown"))
    except redis.ResponseError:
        return "of unknown version (INFO is disabled)"  # some hosted Redis rename it


def check_persistence(settings: Settings) -> Check:
    """Whether a restart of Redis keeps the tracked links and scheduled reminders."""
    name = "redis persistence"
    if not settings.redis_url:
        return skipped(name, "no embedded Redis is running; it keeps an append-only file "
                       f"(fsynced every second) in {settings.data_dir}/")
    client = _redis(settings, decode=True)
    try:
        save = str(client.config_get("save").get("save", "")).strip()
        aof = client.config_get("appendonly").get("appendonly", "no")
    except redis.ResponseError:  # managed Redis often disables or renames CONFIG
        return Check(name, True, "could not check: CONFIG is disabled on this server; make "
                     "sure your provider keeps an append-only file (appendonly yes)")
    except redis.RedisError:
        return Check(name, True, "could not check: Redis is not answering (see above)")
    if aof == "yes":
        return Check(name, True, "append-only file on"
                     + (f", and RDB snapshots (save {save})" if save else ""))
    if save:
        return Check(name, True, f"RDB snapshots only (save {save}). Warning: a crash of Redis "
                     "loses every link and reminder since the last snapshot (minutes of "
                     "them); turn on appendonly yes to lose at most a second")
    return Check(name, False, "this Redis persists nothing (appendonly no, save ''): a restart "
                 "of Redis loses every tracked link and every scheduled reminder",
                 "turn on the append-only file: CONFIG SET appendonly yes and "
                 "CONFIG REWRITE, or appendonly yes in redis.conf (your provider's "
                 "persistence setting on managed Redis)")


def check_workers(settings: Settings) -> Check:
    """The RQ workers registered (and so heartbeating) on each of the bot's queues: the pool
    runs WORKER_PROCESSES on commands, one on reminders and one on status polls."""
    name = "workers"
    if not settings.redis_url:
        return skipped(name, "no `python -m bot` is running: start it to check its workers")
    fix = "start them: python -m bot worker (python -m bot runs them beside itself)"
    queues = queue_names(bool(settings.webhook_urls))
    try:
        # RQ stores pickled jobs: its connection must not decode replies.
        workers = [w for w in Worker.all(connection=_redis(settings, decode=False))
                   if set(w.queue_names()) & set(queues)]
    except redis.RedisError:
        return Check(name, False, "cannot tell: Redis is not answering",
                     f"fix Redis first, then {fix}")
    on = {queue: sum(queue in w.queue_names() for w in workers) for queue in queues}
    counts = ", ".join(f"{count} on {queue}" for queue, count in on.items())
    idle = [f"no worker on {queue}: {UNDONE[queue]}" for queue, count in on.items()
            if not count]
    if idle:
        return Check(name, False, f"{'; '.join(idle)} ({counts})", fix)
    return Check(name, True, f"{len(workers)} running: {counts}{_heartbeats(workers)}")


def check_webhooks(settings: Settings) -> list[Check]:
    """One line per webhook receiver (skipped while WEBHOOK_URLS is unset): ✗ while a 410
    Gone has stopped deliveries to it."""
    if not settings.webhook_urls:
        return [skipped("webhooks", "WEBHOOK_URLS is not set")]
    names = [f"webhook {safe_url(url)}" for url in settings.webhook_urls]
    if not settings.redis_url:
        return [skipped(name, "no `python -m bot` is running: its Redis holds the "
                        "deliveries") for name in names]
    webhooks = build_webhooks(settings, _redis(settings, decode=True),
                              _redis(settings, decode=False))
    assert webhooks is not None
    return [_receiver_check(webhooks, url, name)
            for url, name in zip(settings.webhook_urls, names, strict=True)]


def _receiver_check(webhooks: Webhooks, url: str, name: str) -> Check:
    try:
        state = webhooks.state(url)
    except (StoreUnavailable, redis.RedisError):
        return Check(name, False, "cannot tell: Redis is not answering", "fix Redis first")
    counts = f"{state.delivered} delivered, {state.pending} pending, {state.failing} failing"
    if state.disabled:
        return Check(name, False, f"disabled: it answered 410 Gone ({counts})",
                     f"once the receiver takes events again: python -m bot webhooks enable "
                     f"{safe_url(url)}")
    last = f"; last error {state.last_error}" if state.last_error else ""
    return Check(name, True, f"{counts}{last}")


def _heartbeats(workers: Sequence[BaseWorker]) -> str:
    """How long ago the workers last said they live, oldest and newest."""
    ages = sorted(_age(w.last_heartbeat) for w in workers if w.last_heartbeat is not None)
    if not ages:
        return ""
    newest, oldest = f"{ages[0]:.0f}", f"{ages[-1]:.0f}"
    return f" (heartbeats {newest if newest == oldest else f'{newest}–{oldest}'} s ago)"


def _age(beat: datetime) -> float:
    if beat.tzinfo is None:  # RQ's own parser says UTC; older records may be naive
        beat = beat.replace(tzinfo=UTC)
    return max((datetime.now(UTC) - beat).total_seconds(), 0.0)


def _redis(settings: Settings, *, decode: bool) -> redis.Redis:
    assert settings.redis_url is not None
    return connect(settings.redis_url, tls_verify=settings.redis_tls_verify,
                   decode_responses=decode, socket_timeout=REDIS_TIMEOUT,
                   health_check_interval=0)




def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)  # urllib's URLError wraps the socket error
    text = str(reason or error) or type(error).__name__
    return text.splitlines()[0][:160]
