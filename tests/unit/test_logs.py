"""Log lines: secrets and full tokens scrubbed, one JSON object per line when asked."""

from __future__ import annotations

import io
import json
import logging

from bot.telemetry.logs import MAX_LINE, QUIET_LOGGERS, JsonFormatter, RedactSecrets

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


def test_extra_fields_that_are_not_text_or_numbers_are_not_written() -> None:
    # RQ logs a failed job's arguments as `extra`: a note, a response URL, a link.
    arguments = ("https://hooks.slack.com/commands/T0/1/secret", "ACME Private Note",
                 f"https://messaging.exotel.com/ua-links/isv-onboard/{TOKEN}")
    line = render(JsonFormatter(), "job failed", arguments=arguments,
                  kwargs={"customer_ref": "crm-42"}, queue="onboard-commands")
    entry = json.loads(line)
    assert entry["arguments"] == "[tuple, not logged]"
    assert entry["kwargs"] == "[dict, not logged]" and entry["queue"] == "onboard-commands"
    for value in (*arguments, "crm-42", TOKEN):
        assert value not in line


def test_bare_and_url_encoded_tokens_are_masked() -> None:
    line = render(logging.Formatter("%(message)s"),
                  "request failed: %s; upper %s; encoded %s; ?access_token%%3D%s",
                  TOKEN, TOKEN.upper(),
                  f"https%3A%2F%2Fmessaging.exotel.com%2Fua-links%2Fisv-onboard%2F{TOKEN}",
                  TOKEN)
    assert TOKEN not in line and TOKEN.upper() not in line
    assert "request failed: …5e6f" in line and "upper …5E6F" in line
    assert "isv-onboard%2F…5e6f" in line
    # Things of other shapes are left alone: batch ids (undashed) are what operators look for.
    batch = "806255b7dd2a4b9e9818725586ae7873"
    plain = render(logging.Formatter("%(message)s"), "batch %s, ts %s", batch, "1712345678.1")
    assert batch in plain and "1712345678.1" in plain


def test_a_newline_in_a_value_cannot_forge_a_line() -> None:
    forged = "ACME\n2026-12-01 12:00:00,000 INFO bot.onboarding: issue: 50 of 50 links\r"
    for formatter in (logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"),
                      JsonFormatter()):
        out = render(formatter, "note %s", forged, note=forged)
        assert out.count("\n") == 1 and "\r" not in out, out  # the record's own line end
        assert "\\n2026-12-01" in out


def test_a_traceback_is_contained_and_scrubbed() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactSecrets([]))
    logger = logging.getLogger("test.logs.exc")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise KeyError(f"x\nINFO forged line {TOKEN}")
    except KeyError:
        logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "ERROR request failed"
    assert all(line.startswith("  | ") for line in lines[1:]), lines
    assert TOKEN not in stream.getvalue()


def test_every_line_is_capped() -> None:
    out = render(logging.Formatter("%(message)s"), "text %s", "A" * 1_000_000)
    assert len(out) < MAX_LINE + 100 and "more characters cut" in out
    entry = json.loads(render(JsonFormatter(), "text %s", "A" * 1_000_000, text="B" * 10**6))
    assert len(entry["message"]) < MAX_LINE + 100 and len(entry["text"]) < MAX_LINE + 100


def test_bolts_verification_log_is_dropped() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets([]))
    logger = logging.getLogger("slack_bolt.RequestVerification")
    logger.addHandler(handler)
    try:
        logger.info("Invalid request signature detected (signature: x, timestamp: 1, body: %s)",
                    "text=secret-customer")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == ""
    # The name Bolt logs it under, as of the pinned release.
    from slack_bolt.middleware.request_verification import RequestVerification

    assert RequestVerification("s").logger.name in QUIET_LOGGERS
