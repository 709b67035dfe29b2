"""The playground's parts that need no process: Block Kit checks, request signing, and the
settings `python -m bot try` gives the bot (none of the operator's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slack_sdk.signature import SignatureVerifier

from bot.playground import blockkit, run, signed
from bot.settings import SettingsError, load_settings

GOOD = [{"type": "header", "text": {"type": "plain_text", "text": "Links"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*two* links"}},
        {"type": "divider"},
        {"type": "actions", "elements": [{"type": "button", "action_id": "a",
                                          "text": {"type": "plain_text", "text": "Go"}}]}]

REAL_LOOKING = {
    "SLACK_BOT_TOKEN": "xoxb-1234-5678-realLooking", "SLACK_SIGNING_SECRET": "8f14e45fceea",
    "SLACK_APP_TOKEN": "xapp-1-A0-123-abc", "SLACK_API_URL": "https://slack.com/api/",
    "EXOTEL_API_KEY": "live-key", "EXOTEL_API_TOKEN": "live-token",
    "EXOTEL_ACCOUNT_SID": "acme", "EXOTEL_BASE_URL": "https://api.exotel.com",
    "REDIS_URL": "rediss://:pw@redis.example.com:6380/0",
    "WEBHOOK_URLS": "https://hooks.example.com/onboard", "DIGEST_CHANNEL": "C0REAL",
    "HTTPS_PROXY": "http://proxy.example.com:3128", "PATH": "/usr/bin", "LOG_LEVEL": "DEBUG",
}


def test_block_kit_slack_accepts_has_no_problems() -> None:
    assert blockkit.problems(GOOD) == []
    assert blockkit.problems(json.dumps(GOOD)) == []  # as form-encoded calls send it
    assert blockkit.problems(None) == []


def test_block_kit_slack_refuses_is_named() -> None:
    unknown = blockkit.problems([{"type": "carousel_of_dreams"}])
    assert unknown and "carousel_of_dreams" in unknown[0]
    long_header = [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]
    assert blockkit.problems(long_header)
    long_section = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    assert blockkit.problems(long_section)
    assert blockkit.problems([GOOD[2]] * 51) == ["51 blocks is over the limit of 50"]
    assert blockkit.problems([GOOD[2]] * 51, blockkit.VIEW_BLOCKS) == []
    assert blockkit.problems("not json") == ["blocks are not JSON"]
    assert blockkit.problems([{"text": "no type"}])


def test_signed_requests_verify_with_slack_sdk() -> None:
    body = signed.command_body("/onboard-link", "2 Playground Co", "http://127.0.0.1/r")
    headers = signed.sign(body, "the-secret")
    verifier = SignatureVerifier("the-secret")
    assert verifier.is_valid_request(body, headers)
    assert not SignatureVerifier("another-secret").is_valid_request(body, headers)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    event = signed.event_body(signed.home_opened_event())
    assert signed.sign(event, "s")["Content-Type"] == "application/json"


def test_the_bot_gets_none_of_the_operators_settings(tmp_path: Path) -> None:
    env = run.bot_environment(REAL_LOOKING, slack_api_url="http://127.0.0.1:1/api/",
                              exotel_url="http://127.0.0.1:2", signing_secret="s" * 32,
                              data_dir=tmp_path, port=4321)
    assert env["SLACK_API_URL"] == "http://127.0.0.1:1/api/"
    assert env["EXOTEL_BASE_URL"] == "http://127.0.0.1:2"
    assert env["WEB_HOST"] == "127.0.0.1" and env["PORT"] == "4321"
    for gone in ("SLACK_APP_TOKEN", "REDIS_URL", "WEBHOOK_URLS", "DIGEST_CHANNEL",
                 "HTTPS_PROXY"):
        assert gone not in env
    assert all(value != REAL_LOOKING.get(name) for name, value in env.items()
               if name.startswith(("SLACK_", "EXOTEL_")))
    assert env["PATH"] == "/usr/bin" and env["LOG_LEVEL"] == "DEBUG"  # kept
    settings = load_settings(**{k: v for k, v in env.items() if k != "PATH"})
    assert settings.redis_url is None  # the embedded Redis, in the playground's folder
    assert settings.data_dir == tmp_path
    # The reminder comes a few minutes after issue, not an hour before expiry.
    assert settings.reminder_lead == run.LINK_TTL - run.REMINDER_AFTER
    assert settings.status_poll_seconds == run.STATUS_POLL_SECONDS


def test_the_playground_keeps_its_data_in_its_own_folder(tmp_path: Path) -> None:
    assert run.data_folder({}, tmp_path) == tmp_path / "data" / "playground"
    (tmp_path / ".env").write_text("ONBOARD_DATA_DIR=/srv/onboard\nSLACK_BOT_TOKEN=xoxb-1\n")
    assert run.data_folder({}, tmp_path) == Path("/srv/onboard/playground")
    assert run.data_folder({"ONBOARD_DATA_DIR": "d"}, tmp_path) == tmp_path / "d" / "playground"


def test_missing_settings_point_at_the_playground(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "EXOTEL_API_KEY",
                 "EXOTEL_API_TOKEN", "EXOTEL_ACCOUNT_SID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value).splitlines()[-1].endswith("uv run python -m bot try")
