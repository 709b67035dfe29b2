"""Log lines: secrets and full tokens scrubbed, one JSON object per line when asked."""

from __future__ import annotations

import io
import json
import logging

from bot.logs import JsonFormatter, RedactSecrets

TOKEN = "41eabcd0-1234-4c55-9e8a-1d2b3c4d5e6f"


def render(formatter: logging.Formatter, message: str, *args: object, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets(["exotel-secret-token", "xoxb-123-456"]))
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, *args, extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_secrets_and_full_tokens_are_scrubbed() -> None:
    line = render(logging.Formatter("%(message)s"),
                  "auth %s and %s; GET /isv?access_token=%s; link %s",
                  "exotel-secret-token", "xoxb-123-456", TOKEN,
                  f"https://messaging.exotel.com/ua-links/isv-onboard/{TOKEN}")
    assert "exotel-secret-token" not in line and "xoxb-123-456" not in line
    assert TOKEN not in line
    assert "access_token=…5e6f" in line and "isv-onboard/…5e6f" in line


def test_json_lines_carry_the_extra_fields() -> None:
    line = render(JsonFormatter(), "issue: %d links", 3, command="issue", user_id="U0REP",
                  exotel_seconds=0.42)
    entry = json.loads(line)
    assert entry["message"] == "issue: 3 links" and entry["level"] == "WARNING"
    assert entry["command"] == "issue" and entry["user_id"] == "U0REP"
    assert entry["exotel_seconds"] == 0.42
