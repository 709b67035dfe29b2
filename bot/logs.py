"""Logging set-up: one line per event, text or JSON, scrubbed of secrets and full tokens."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime

REDACTED = "[redacted]"
# Onboarding tokens inside links and validate URLs: only their last four characters are kept.
TOKEN_IN_TEXT = re.compile(r"(isv-onboard/|access_token=)[A-Za-z0-9_-]*([A-Za-z0-9_-]{4})")
# LogRecord attributes that are not extras passed by the caller.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (of 4 characters or more) redacted and full tokens masked."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return TOKEN_IN_TEXT.sub(r"\1…\2", text)


class RedactSecrets(logging.Filter):
    """Replaces secrets and full tokens in a record's final text (a last line of defence)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = scrub(message, self._secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, self._secrets)
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
