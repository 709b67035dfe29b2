"""Exotel misbehaving, end to end: each failure reaches the user in plain words."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable

import pytest
import redis

from bot.domain.models import Requester
from bot.engine.queue import Reply
from bot.exotel.sandbox import ExotelSandbox, Fault
from bot.runtime import jobs
from testkit.env import BOT_TOKEN, EXOTEL_KEY, EXOTEL_TOKEN, SIGNING_SECRET
from testkit.slack import FakeSlack
from tests.blockkit import block_text
from tests.support import Bot

LINK = re.compile(r"https://messaging\.exotel\.com/ua-links/isv-onboard/([0-9a-f-]+)")
SOME_TOKEN = "0b7c6a1e-3f2d-4c55-9e8a-1d2b3c4d5e6f"
ARGUMENT = {"/onboard-link": "ACME Corp", "/check-token": SOME_TOKEN}
BOTH = pytest.mark.parametrize("command", ["/onboard-link", "/check-token"])

# Every test here waits out real retries, backoffs or deadlines against the fake Exotel.
pytestmark = pytest.mark.slow


def answer(bot: Bot, command: str, text: str) -> str:
    """Run a command; return the text of its final reply. How long retries and deadlines
    take is checked on a fake clock in test_exotel_client.py, not by a stopwatch here."""
    reply = bot.command(command, text)
    assert reply.http.status_code == 200
    return block_text(reply.final())


def issue_one(bot: Bot) -> str:
    """Issue one link through the bot (Exotel behaving); return its token."""
    tokens = LINK.findall(answer(bot, "/onboard-link", ""))
    assert len(tokens) == 1
    return tokens[0]


def tracked_tokens(redis_client: redis.Redis) -> set[str]:
    return {key.removeprefix("onboard:token:") for key in redis_client.keys("onboard:token:*")}


@BOTH
def test_401_tells_the_operator_to_check_the_credentials(
        bot: Bot, exotel: ExotelSandbox, redis_client: redis.Redis, command: str) -> None:
    exotel.always = Fault(status=401)
    text = answer(bot, command, ARGUMENT[command])
    assert "rejected the bot's credentials" in text
    assert "operator" in text and "EXOTEL_API_TOKEN" in text
    assert len(exotel.calls) == 1  # wrong credentials stay wrong: no retries
    assert tracked_tokens(redis_client) == set()


@BOTH
def test_402_points_at_the_plan_and_its_limit(bot: Bot, exotel: ExotelSandbox,
                                              command: str) -> None:
    exotel.always = Fault(status=402)
    text = answer(bot, command, ARGUMENT[command])
    assert "plan or usage limit" in text and "HTTP 402" in text
    assert "account owner" in text
    assert len(exotel.calls) == 1


def test_429_then_200_waits_out_retry_after_and_delivers_the_link(
        bot: Bot, exotel: ExotelSandbox, redis_client: redis.Redis) -> None:
    exotel.faults.append(Fault(status=429, retry_after="1"))
    tokens = LINK.findall(answer(bot, "/onboard-link", "ACME Corp"))
    assert len(tokens) == 1 and tracked_tokens(redis_client) == set(tokens)
    first, second = exotel.calls_of("POST")
    assert second.at - first.at >= 0.9  # Retry-After: 1 was honoured


def test_429_then_200_on_check_token_gives_the_status(bot: Bot, exotel: ExotelSandbox) -> None:
    token = issue_one(bot)
    exotel.faults.append(Fault(status=429, retry_after="1"))
    assert "VALID" in answer(bot, "/check-token", token)
    assert len(exotel.calls_of("GET")) == 2


def test_500_then_200_delivers_the_link(bot: Bot, exotel: ExotelSandbox,
                                        redis_client: redis.Redis) -> None:
    exotel.faults.append(Fault(status=500))
    tokens = LINK.findall(answer(bot, "/onboard-link", "ACME Corp"))
    assert len(tokens) == 1 and tracked_tokens(redis_client) == set(tokens)
    assert len(exotel.calls_of("POST")) == 2


def test_500_then_200_on_check_token_gives_the_status(bot: Bot, exotel: ExotelSandbox) -> None:
    token = issue_one(bot)
    exotel.faults.append(Fault(status=500))
    assert "VALID" in answer(bot, "/check-token", token)


@BOTH
def test_500_every_time_gives_up_by_the_deadline(
        make_bot: Callable[..., Bot], exotel: ExotelSandbox, command: str) -> None:
    bot = make_bot(EXOTEL_DEADLINE=3)
    exotel.always = Fault(status=500)
    text = answer(bot, command, ARGUMENT[command])
    assert "Exotel is having trouble (HTTP 500)" in text and "try again" in text
    assert 2 <= len(exotel.calls) <= 5  # retried, but not for ever


@BOTH
def test_no_answer_for_30_s_is_reported_long_before(
        make_bot: Callable[..., Bot], exotel: ExotelSandbox, command: str) -> None:
    bot = make_bot(EXOTEL_TIMEOUT=1, EXOTEL_DEADLINE=4)
    exotel.always = Fault(delay=30)
    text = answer(bot, command, ARGUMENT[command])
    assert "Exotel did not answer in time" in text
    if command == "/onboard-link":
        assert len(exotel.calls) == 1  # a POST that may have landed is never sent twice


@pytest.mark.parametrize(("status", "words"), [
    (502, "Exotel is having trouble (HTTP 502)"),
    (200, "Exotel answered with something that is not JSON (HTTP 200)"),
])
def test_an_html_error_page_is_summed_up_not_shown(
        make_bot: Callable[..., Bot], exotel: ExotelSandbox, status: int, words: str) -> None:
    bot = make_bot(EXOTEL_DEADLINE=3)
    exotel.always = Fault(status=status, html=True)
    text = answer(bot, "/onboard-link", "ACME Corp")
    assert words in text
    assert "<html" not in text and "Bad Gateway" not in text


def test_one_of_five_failing_still_delivers_and_tracks_the_other_four(
        bot: Bot, exotel: ExotelSandbox, redis_client: redis.Redis) -> None:
    exotel.faults.append(Fault(status=401))
    text = answer(bot, "/onboard-link", "5 ACME Corp")
    tokens = set(LINK.findall(text))
    assert len(tokens) == 4
    assert tracked_tokens(redis_client) == tokens
    assert "1 of 5 links could not be created" in text
    assert "rejected the bot's credentials" in text
    assert len(exotel.calls_of("POST")) == 5


def test_no_secret_reaches_the_logs_or_slack(
        make_bot: Callable[..., Bot], exotel: ExotelSandbox, slack: FakeSlack,
        caplog: pytest.LogCaptureFixture) -> None:
    """The jobs run in worker processes; here they run in this one, the same code, so
    that every log record they make is captured."""
    caplog.set_level(logging.DEBUG)
    bot = make_bot(EXOTEL_TIMEOUT=1, EXOTEL_DEADLINE=3)
    requester = Requester(team_id="T0FAKE", user_id="U0REP", channel_id="C0SALES")
    # force: issue each time (not "you already have a live link" for the same note)
    work = {"/onboard-link": (jobs.issue_links, (requester, 1, "ACME Corp", "b1", False, True)),
            "/check-token": (jobs.check_token, (requester, SOME_TOKEN))}
    scenarios = [
        ("/onboard-link", [Fault(status=401)], "credentials"),
        ("/check-token", [Fault(status=401)], "credentials"),
        ("/onboard-link", [Fault(status=402)], "plan"),
        ("/onboard-link", [Fault(status=500)], "onboarding link"),
        ("/onboard-link", [Fault(status=429, retry_after="0")], "onboarding link"),
        ("/onboard-link", [Fault(status=502, html=True)] * 5, "HTTP 502"),
        ("/onboard-link", [Fault(delay=30)], "did not answer in time"),
    ]
    for i, (command, faults, words) in enumerate(scenarios):
        exotel.faults.extend(faults)
        task, args = work[command]
        task(Reply.to(slack.response_url(f"s{i}")), *args)
        assert words in block_text(slack.wait_for_replies(f"s{i}")[0])
        exotel.faults.clear()
    # and once through the bot itself, so the Slack side is covered too
    exotel.faults.append(Fault(status=401))
    assert "credentials" in answer(bot, "/onboard-link", "ACME")

    basic = base64.b64encode(f"{EXOTEL_KEY}:{EXOTEL_TOKEN}".encode()).decode()
    secrets = [EXOTEL_TOKEN, BOT_TOKEN, SIGNING_SECRET, basic]
    names = {record.name for record in caplog.records}
    logged = {"bot.exotel.client", "bot.runtime.execution", "bot.domain.onboarding"}
    assert logged <= names  # logs were captured
    assert any(" failed: " in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        exception = (logging.Formatter().formatException(record.exc_info)
                     if record.exc_info else "")
        logged = "\n".join([record.getMessage(), record.exc_text or "", exception])
        for secret in secrets:
            assert secret not in logged, f"a secret in {record.name}: {record.getMessage()}"
    sent = json.dumps([slack.responses, [call.params for call in slack.api_calls]])
    assert "credentials" in sent  # the replies were captured
    for secret in secrets:
        assert secret not in sent
