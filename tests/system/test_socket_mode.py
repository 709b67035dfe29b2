"""`python -m bot` in Socket Mode, as the manifest sets it up: acks over Slack's WebSocket."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl

import pytest

from bot.exotel.sandbox import ExotelSandbox
from testkit.env import APP_TOKEN, BOT_TOKEN, EXOTEL_TOKEN, SIGNING_SECRET, bot_env
from testkit.processes import BotProcess
from testkit.signed import command_body
from testkit.slack import FakeSlack
from testkit.socket_mode import FakeSocketMode
from tests.blockkit import block_text

pytestmark = pytest.mark.slow  # real processes


@pytest.fixture
def socket_mode(slack: FakeSlack) -> Iterator[FakeSocketMode]:
    server = FakeSocketMode().start()
    slack.socket_url = server.url
    yield server
    slack.socket_url = None
    server.stop()


def command(text: str, response_url: str) -> dict[str, str]:
    """A slash command's payload as Socket Mode carries it: the HTTP form's fields, as JSON."""
    return dict(parse_qsl(command_body("/onboard-link", text, response_url)))


def test_socket_mode_acks_over_the_socket_and_replies_with_the_links(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack, socket_mode: FakeSocketMode
) -> None:
    bot = BotProcess(bot_env(exotel, slack, REDIS_URL=redis_url, SLACK_APP_TOKEN=APP_TOKEN))
    bot.start(ready=lambda: socket_mode.connected)
    try:
        [opened] = slack.calls("apps.connections.open")
        assert opened.authorization == f"Bearer {APP_TOKEN}"

        envelope = socket_mode.send("slash_commands",
                                    command("2 ACME Corp", slack.response_url("socket")))
        ack = socket_mode.wait_for_ack(envelope)
        assert "Creating 2 onboarding links" in block_text(ack)

        [reply] = slack.wait_for_replies("socket")
        assert "2 WhatsApp onboarding links" in reply["text"]
        assert "ACME Corp" in block_text(reply)
        assert len(exotel.calls_of("POST")) == 2

        refused = socket_mode.wait_for_ack(
            socket_mode.send("slash_commands", command("51", slack.response_url("x"))))
        assert "whole number from 1 to 50" in block_text(refused)
    finally:
        bot.stop(timeout=15)  # fails unless it, and the worker beside it, exit on SIGTERM
    output = bot.output()
    for secret in (APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, EXOTEL_TOKEN):
        assert secret not in output
