"""The bot's settings as tests and the benchmark give them: made-up credentials, pointed at
the stand-ins (the sandbox for Exotel, testkit.slack for Slack)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parent.parent  # the project, where `python -m bot` runs

SIGNING_SECRET = "test-signing-secret-5b1f"
BOT_TOKEN = "xoxb-test-bot-token-91c2"
APP_TOKEN = "xapp-test-app-token-4e8d"
EXOTEL_KEY = "exotel-key"
EXOTEL_TOKEN = "exotel-secret-token-7d3e9a"
EXOTEL_SID = "acme1"


class Served(Protocol):  # the Exotel sandbox
    @property
    def url(self) -> str: ...


class SlackApi(Protocol):  # testkit.slack.FakeSlack (named here, not imported: it imports this)
    @property
    def api_url(self) -> str: ...


def bot_env(exotel: Served, slack: SlackApi, **extra: str) -> dict[str, str]:
    """The bot's settings, as environment, pointed at the fakes."""
    return {
        "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url, "EXOTEL_API_KEY": EXOTEL_KEY,
        "EXOTEL_API_TOKEN": EXOTEL_TOKEN, "EXOTEL_ACCOUNT_SID": EXOTEL_SID,
        "EXOTEL_BASE_URL": exotel.url, "WEB_CONCURRENCY": "1", **extra,
    }
