"""What reaches the bot over HTTP: signatures, acks under load, health, fuzzed command text."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.signature import SignatureVerifier

from bot.exotel.sandbox import ExotelSandbox, Fault
from bot.runtime.app import create_app
from bot.runtime.web import parse_slack_body
from bot.slack.core import Core
from testkit.env import BOT_TOKEN
from testkit.signed import action_body, command_body, sign
from tests.blockkit import block_text
from tests.support import Bot


def _post(bot: Bot, body: str, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{bot.url}/slack/events", data=body.encode(), headers=headers,
                         timeout=10)


def test_unsigned_wrongly_signed_and_stale_requests_are_refused(
    bot: Bot, exotel: ExotelSandbox
) -> None:
    body = command_body("/onboard-link", "2 ACME", bot.slack.response_url("x"))
    unsigned = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong = sign(body, secret="not-the-secret")
    stale = sign(body, timestamp=int(time.time()) - 301)
    tampered = sign(body.replace("2+ACME", "1+ACME"))
    for headers in (unsigned, wrong, stale):
        assert _post(bot, body, headers).status_code == 401
    assert _post(bot, body + "&x=1", tampered).status_code == 401
    assert exotel.calls == []
    assert _post(bot, body, sign(body)).status_code == 200  # the same request, signed, works


def test_the_signature_is_checked_once_before_bolt_sees_the_request(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[str] = []
    is_valid = SignatureVerifier.is_valid

    def counted(self: SignatureVerifier, *args: object, **kwargs: object) -> bool:
        checks.append("checked")
        return is_valid(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SignatureVerifier, "is_valid", counted)
    body = command_body("/onboard-link", "1 ACME once", bot.slack.response_url("once"))
    assert _post(bot, body, sign(body)).status_code == 200
    assert checks == ["checked"]


def test_building_the_app_warns_of_nothing_with_the_bot_token_in_the_environment(
    make_core: Callable[..., Core], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Bolt reads SLACK_BOT_TOKEN itself and warns it goes unused beside the client it is given.
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    with caplog.at_level(logging.WARNING):
        create_app(make_core())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_acks_never_wait_for_exotel_the_work_is_queued(make_bot, exotel: ExotelSandbox) -> None:
    bot = make_bot()
    bot.worker.stop()  # no worker: an ack that waited for Exotel would never come
    exotel.always = Fault(passthrough=True, delay=5)
    with ThreadPoolExecutor(20) as pool:
        acks = list(pool.map(lambda i: bot.command("/onboard-link", f"1 customer {i}").ack,
                             range(20)))
    assert all("Creating 1 onboarding link" in block_text(ack) for ack in acks)
    assert exotel.calls == []
    assert bot.core.commands.queue.count == 20  # each command's work, waiting


def test_healthz_follows_redis(make_bot) -> None:
    from testkit.processes import RedisProcess

    own = RedisProcess().start()
    try:
        bot = make_bot(REDIS_URL=own.url)
        assert requests.get(f"{bot.url}/healthz", timeout=5).status_code == 200
        own.stop()
        assert requests.get(f"{bot.url}/healthz", timeout=10).status_code == 503
        own.start()
        assert requests.get(f"{bot.url}/healthz", timeout=10).status_code == 200
    finally:
        own.stop()


def test_redis_down_means_no_exotel_call_and_recovery_needs_no_restart(
    make_bot, exotel: ExotelSandbox
) -> None:
    from testkit.processes import RedisProcess

    own = RedisProcess().start()
    try:
        bot = make_bot(REDIS_URL=own.url)
        own.stop()
        text = block_text(bot.command("/onboard-link", "2 ACME").ack)  # the ack says so
        assert "Redis" in text and "not answering" in text
        assert exotel.calls == []
        own.start()
        text = block_text(bot.command("/onboard-link", "2 ACME").final())
        assert "2 WhatsApp onboarding links" in text
        assert len(exotel.calls_of("POST")) == 2
    finally:
        own.stop()


# The same 30 examples every run (derandomize, no example database): CI must not turn red on
# a draw; a wider search is a local run with more max_examples.
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
TRICKY = st.sampled_from(["<!channel>", "<!here>", "*bold*", "<https://x.io|click>", "<@U1>",
                          "&amp;", "&lt;", "```", "50", "51", "-1", "2.5", "help", "\u202e",
                          "\x00"])
COMMAND_TEXT = st.one_of(
    st.text(max_size=700),
    st.lists(st.one_of(TRICKY, st.text(max_size=20)), max_size=12).map(" ".join),
)


def _well_formed(message: dict) -> None:
    assert message.get("text")
    blocks = message.get("blocks", [])
    assert 0 < len(blocks) <= 50
    for block in blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        for element in block.get("elements", []):
            if element["type"] == "mrkdwn":
                assert "<!channel>" not in element["text"] and "<!here>" not in element["text"]


@pytest.fixture
def fuzz_bot(make_bot) -> Bot:
    # One bot serves every example, so the per-user daily quota must not run out.
    return make_bot(MAX_LINKS_PER_USER_PER_DAY=1_000_000)


@FUZZ
@given(text=COMMAND_TEXT)
def test_fuzzed_onboard_text_always_gets_a_well_formed_reply(fuzz_bot: Bot, text: str) -> None:
    bot = fuzz_bot
    reply = bot.command("/onboard-link", text)
    assert reply.http.status_code == 200
    _well_formed(reply.ack)
    if "Creating" in reply.ack["text"]:
        final = reply.final()
        _well_formed(final)
        # New links, or (the same note again) the live link already issued for it.
        assert ("WhatsApp onboarding link" in final["text"]
                or "You already have a live link" in final["text"])
        for block in final["blocks"]:
            if block["type"] == "section":
                assert "<!channel>" not in block["text"]["text"]


@FUZZ
@given(text=COMMAND_TEXT)
def test_fuzzed_check_text_always_gets_a_well_formed_reply(fuzz_bot: Bot, text: str) -> None:
    bot = fuzz_bot
    reply = bot.command("/check-token", text)
    assert reply.http.status_code == 200
    _well_formed(reply.ack)
    if "Asking Exotel" in reply.ack["text"]:
        _well_formed(reply.final())


# Bodies are read by field (bot/web.py), not by Bolt's substring test for "payload".

def test_a_command_that_mentions_payload_gets_its_links(bot: Bot, exotel: ExotelSandbox) -> None:
    reply = bot.command("/onboard-link", "1 payloadco Ltd")
    assert reply.http.status_code == 200 and "Creating" in block_text(reply.ack)
    final = block_text(reply.final())
    assert "1 WhatsApp onboarding link" in final and "payloadco Ltd" in final


def test_a_command_from_a_channel_named_payload_gets_its_links(bot: Bot) -> None:
    name = uuid.uuid4().hex
    body = command_body("/onboard-link", "1 ACME", bot.slack.response_url(name))
    body = body.replace("channel_name=sales", "channel_name=payload-team")
    assert "channel_name=payload-team" in body
    reply = bot._send(name, body)
    assert reply.http.status_code == 200
    assert "1 WhatsApp onboarding link" in block_text(reply.final())


def test_bolt_still_misreads_a_form_that_mentions_payload() -> None:
    """Why FieldParsedRequest exists. When this fails, Bolt parses forms by field and the
    workaround in bot/web.py (FieldParsedRequest, parse_slack_body's form branch) can go."""
    from slack_bolt.request.internals import parse_body

    body = command_body("/onboard-link", "1 payloadco Ltd", "https://hooks.example/r")
    assert parse_body(body, "application/x-www-form-urlencoded") == {}
    assert parse_slack_body(body, "application/x-www-form-urlencoded")["text"] == \
        "1 payloadco Ltd"


def test_slack_bodies_are_parsed_by_field() -> None:
    form = "application/x-www-form-urlencoded"
    click = parse_slack_body(action_body("stop_reminders", "b1", "https://r"), form)
    assert click["type"] == "block_actions" and click["actions"][0]["value"] == "b1"
    assert parse_slack_body('{"type": "url_verification"}', "application/json") == \
        {"type": "url_verification"}
    assert parse_slack_body("text=payload&command=%2Fx", form)["text"] == "payload"
    for bad, content_type in [("payload=junk", form), ("payload=%5B1%5D", form),
                              ("[1]", "application/json"), ("{", "application/json"),
                              ('{"a":' * 100_000, "application/json"),
                              ("payload=" + "%5B" * 100_000, form)]:
        with pytest.raises(ValueError):
            parse_slack_body(bad, content_type)


def test_signed_but_malformed_requests_are_refused_in_process(bot: Bot) -> None:
    """The same checks as the production front (tests/test_web_front.py), in-process."""
    url = f"{bot.url}/slack/events"
    for body in ["payload=junk", "payload=%7B", "payload=%5B%5D"]:
        assert _post(bot, body, sign(body)).status_code == 400
    body = command_body("/onboard-link", "1 ACME", bot.slack.response_url("x"))
    stale_text = {**sign(body), "X-Slack-Request-Timestamp": "now"}
    assert _post(bot, body, stale_text).status_code == 401
    assert _post(bot, body, {**sign(body), "Content-Encoding": "gzip"}).status_code == 400
    assert requests.get(url, timeout=5).status_code == 405
    big = "text=" + "A" * (1 << 20)
    assert _post(bot, big, sign(big)).status_code == 413
