"""`/check-token` end to end: a link issued by `/onboard-link`, then asked about in every form."""

from __future__ import annotations

import re
import uuid

import pytest

from bot.exotel.sandbox import ExotelSandbox
from tests.blockkit import LINK, assert_inert, block_text
from tests.support import Bot

NOT_A_TOKEN = "doesn't look like an onboarding token"


def issue_one(bot: Bot, note: str = "ACME") -> tuple[str, str]:
    """Issue one link with `/onboard-link 1 <note>`; its URL and token."""
    match = LINK.search(block_text(bot.command("/onboard-link", f"1 {note}").final()))
    assert match, "no link issued"
    return match.group(0), match.group(1)


def check(bot: Bot, text: str) -> str:
    reply = bot.command("/check-token", text)
    assert reply.http.status_code == 200
    assert "Asking Exotel" in block_text(reply.ack)
    final = reply.final()
    assert final["response_type"] == "ephemeral"
    assert_inert(final, "<!channel>")
    return block_text(final)


@pytest.mark.parametrize("form", [
    "{url}", "<{url}>", "<{url}|onboarding link>", "{url}/", "{url}.", "{url})", "'{url}'",
    "{token}", "  {token}  ",
], ids=["link", "slack-link", "slack-link-label", "slash", "period", "paren", "quotes",
        "token", "spaced-token"])
def test_a_fresh_link_is_valid_and_tracked(bot: Bot, exotel: ExotelSandbox, form: str) -> None:
    url, token = issue_one(bot, "ACME <!channel> Corp")
    exotel.calls.clear()

    text = check(bot, form.format(url=url, token=token))

    assert "*VALID*" in text
    assert f"…{token[-4:]}" in text
    assert "Issued by <@U0REP>" in text
    assert "Customer note: ACME <!channel> Corp" in text
    assert re.search(r"\(23 h \d+ min left\)", text)
    assert [call.query for call in exotel.calls_of("GET")] == [{"access_token": [token]}]


def test_a_link_that_onboarded_five_customers_is_used(bot: Bot, exotel: ExotelSandbox) -> None:
    url, token = issue_one(bot)
    assert "*VALID*" in check(bot, url)

    exotel.onboard(token, 5)

    text = check(bot, token)
    assert "*USED*" in text
    assert "Issued by <@U0REP>" in text


def test_a_token_exotel_does_not_know(bot: Bot, exotel: ExotelSandbox) -> None:
    token = str(uuid.uuid4())

    text = check(bot, token)

    assert "Exotel does not know this token" in text
    assert [call.query for call in exotel.calls_of("GET")] == [{"access_token": [token]}]


@pytest.mark.parametrize("junk", [
    "../x", "a b", "a" * 500, "https://evil.example/..", "https://evil.example/x/..%2F",
    "x?access_token=other", "&lt;script&gt;alert(1)&lt;/script&gt;", "garbage",
], ids=["dotdot", "space", "500-a", "url-dotdot", "url-encoded-slash", "query", "html",
        "a-word"])
def test_junk_is_refused_in_the_ack_without_calling_exotel(bot: Bot, exotel: ExotelSandbox,
                                                           junk: str) -> None:
    reply = bot.command("/check-token", junk)

    assert reply.http.status_code == 200
    assert NOT_A_TOKEN in block_text(reply.ack)
    assert "https://messaging.exotel.com/ua-links/isv-onboard/" in block_text(reply.ack)
    assert_inert(reply.ack, "<script")
    bot.worker.stop()  # anything it had been given has now run
    assert exotel.calls == []


@pytest.mark.parametrize("text", ["", "help", "  HELP "])
def test_help_and_empty_text_show_usage(bot: Bot, exotel: ExotelSandbox, text: str) -> None:
    reply = bot.command("/check-token", text)

    assert "/check-token &lt;link or token&gt;" in block_text(reply.ack)
    bot.worker.stop()
    assert exotel.calls == []
