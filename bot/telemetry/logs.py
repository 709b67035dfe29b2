"""Logging set-up: one line per event, text or JSON, scrubbed of secrets and full tokens.

A log line may quote what a stranger sent (a header, a command's text) or what a rep owns (an
onboarding link), so every record is scrubbed, has its line breaks escaped and is capped in
length before any handler writes it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "[redacted]"
# Onboarding tokens inside links (plain or URL-encoded) and validate URLs: only their last
# four characters are kept.
TOKEN_IN_TEXT = re.compile(
    r"(isv-onboard(?:/|%2F)|access_token(?:=|%3D))[A-Za-z0-9_-]*([A-Za-z0-9_-]{4})", re.I)
# A bare token: Exotel's tokens are UUIDs. Only the dashed form: the bot's own batch ids are
# 32 hex digits undashed, and operators need them in the log.
BARE_TOKEN = re.compile(
    r"(?<![0-9A-Za-z])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{8}"
    r"([0-9a-f]{4})(?![0-9A-Za-z])", re.I)
# Longest line a record may produce; past it the rest is cut and the cut is said.
MAX_LINE = 2000
# Bolt logs the whole body of each request whose signature fails (at INFO); bot.runtime.web has
# already refused those before Bolt sees them, and no body is ever logged.
QUIET_LOGGERS = ("slack_bolt.RequestVerification",)
# RQ's loggers: the parent, and those RQ's own set-up (`rq.logutils.setup_loghandlers`, called
# by its workers, pool and scheduler) sets the level of.
RQ_LOGGERS = ("rq", "rq.worker", "rq.job", "rq.worker_pool", "rq.scheduler")
# Line breaks, other control characters and bidi overrides, escaped wherever they are logged.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_DONE = "_onboard_safe"  # set on a record once made safe: a second handler leaves it be
# LogRecord attributes that are not extras passed by the caller.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", _DONE}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (of 4 characters or more) redacted and full tokens masked."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = TOKEN_IN_TEXT.sub(r"\1…\2", text)
    return BARE_TOKEN.sub(r"…\1", text)


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """`text` on one line (line breaks and other control characters escaped), capped."""
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    if len(text) > limit:
        text = f"{text[:limit]}…[{len(text) - limit} more characters cut]"
    return text


def _contained_traceback(text: str) -> str:
    """A traceback's lines, each capped and marked, so none can pass for a log line."""
    return "\n".join("  | " + one_line(line) for line in text.splitlines())


class RedactSecrets(logging.Filter):
    """Makes each record safe to write: secrets and full tokens scrubbed, one line, capped.

    Sits on the handler, so it sees every record that reaches it, whichever logger made it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in QUIET_LOGGERS:
            return False
        if getattr(record, _DONE, False):
            return True
        setattr(record, _DONE, True)
        record.msg, record.args = one_line(scrub(record.getMessage(), self._secrets)), None
        for name, value in vars(record).items():
            if name in _STANDARD or value is None or isinstance(value, bool | int | float):
                continue
            if isinstance(value, str):
                setattr(record, name, one_line(scrub(value, self._secrets)))
            else:  # e.g. RQ's `arguments` of a failed job: what a user typed, links, URLs
                setattr(record, name, f"[{type(value).__name__}, not logged]")
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _contained_traceback(scrub(record.exc_text, self._secrets))
        if record.stack_info:
            record.stack_info = _contained_traceback(scrub(record.stack_info, self._secrets))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with whatever `extra` fields the call passed."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


def configure(level: str, secrets: Iterable[str], fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet_libraries(level)


def library_level(level: str) -> str:
    """The level of the libraries' loggers (RQ, gunicorn) at the bot's LOG_LEVEL `level`.

    Their INFO lines are routine (each job started and finished, each worker and pool
    started, each maintenance pass): the bot writes its own line per job and per process, so
    theirs show only at DEBUG. Their warnings and errors always show."""
    level = level.upper()
    return "WARNING" if level == "INFO" else level


def quiet_libraries(level: str) -> None:
    """Set RQ's loggers to `library_level(level)`: RQ's own set-up sets the same level again
    when it is given it (as `logging_level`), and adds no handler beside the root's."""
    for name in RQ_LOGGERS:
        logging.getLogger(name).setLevel(library_level(level))


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
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing to hide: as given (urlunsplit would drop unix://'s slashes)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _masked_param(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    return f"{name}=***" if equals and _SECRET_PARAM.search(unquote(name)) else pair


def mask_urls(text: str) -> str:
    """`text` with each URL in it passed through safe_url."""
    return _URL.sub(lambda found: safe_url(found.group()), text)
