"""Nothing acknowledged is lost: commands are jobs in Redis, whatever process dies when."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import requests
from rq import Queue

from bot.domain.store import TOKEN_KEY
from bot.engine.registry import COMMANDS_QUEUE
from bot.exotel.sandbox import ExotelSandbox, Fault
from testkit.env import bot_env
from testkit.processes import BotProcess, alive, descendants_of, kill_tree
from testkit.signed import command_body, sign
from testkit.slack import FakeSlack
from testkit.wait import wait_until
from tests.blockkit import block_text

pytestmark = pytest.mark.slow


def send(web: BotProcess, slack: FakeSlack, name: str, text: str, **fields: Any) -> dict:
    body = command_body("/onboard-link", text, slack.response_url(name), **fields)
    ack = requests.post(f"{web.url}/slack/events", data=body.encode(), headers=sign(body),
                        timeout=5)
    assert ack.status_code == 200
    return ack.json()


def tracked(redis_url: str, tokens: set[str]) -> set[str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    return {t for t in tokens if client.exists(TOKEN_KEY.format(t))}


def test_commands_acked_by_a_web_process_killed_at_once_are_all_answered(
    redis_url: str, redis_client, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    env = bot_env(exotel, slack, REDIS_URL=redis_url)
    web = BotProcess(env, "web").start()
    with ThreadPoolExecutor(20) as pool:
        acks = list(pool.map(lambda n: send(web, slack, f"c{n}", f"1 ACME {n}"), range(20)))
    kill_tree(web)  # right after the acks: no worker has run yet
    assert all("Creating 1 onboarding link" in block_text(ack) for ack in acks)
    assert exotel.calls_of("POST") == []
    worker = BotProcess(env, "worker").start()
    try:
        for n in range(20):
            reply = slack.wait_for_replies(f"c{n}", timeout=60)[0]
            assert "1 WhatsApp onboarding link" in block_text(reply)
    finally:
        worker.stop()
    assert len(exotel.tokens) == 20
    assert tracked(redis_url, set(exotel.tokens)) == set(exotel.tokens)


@pytest.mark.timeout(240)  # a dead worker's jobs are found once their timeout has passed
def test_a_worker_killed_mid_command_leaves_every_link_tracked_and_says_what_was_made(
    redis_url: str, redis_client, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    # Four workers take four commands of three links, one command at a time; the fifth waits
    # in the queue. Of each command's three calls one makes a link at once and two hang past
    # the kill, so no command ends (and frees a worker) before it, and Exotel makes exactly
    # the links whose answers the worker received. The faults are queued per call, and every
    # call is in before the kill: none sent by the dying worker is read after it, when the
    # fake Exotel answers normally again.
    env = bot_env(exotel, slack, REDIS_URL=redis_url, EXOTEL_DEADLINE="10",
                  EXOTEL_TIMEOUT="10", WORKER_PROCESSES="4")
    web = BotProcess(env, "web").start()
    worker = BotProcess(env, "worker").start()
    try:
        hang = Fault(status=503, delay=30)
        exotel.faults.extend([Fault(passthrough=True), hang, hang] * 4)
        for n in range(4):
            send(web, slack, f"k{n}", "3 Cut short", user_id=f"U0REP{n}")
            wait_until(lambda n=n: len(exotel.calls_of("POST")) == 3 * (n + 1), 30,
                       f"command {n}'s three calls at the fake Exotel")
        send(web, slack, "k4", "3 Cut short", user_id="U0REP4")
        commands = Queue(COMMANDS_QUEUE, connection=redis_client)
        wait_until(lambda: commands.count == 1, 10, "the fifth command queued, every worker busy")
        wait_until(lambda: len(tracked(redis_url, set(exotel.tokens))) == 4, 10,
                   "the four links made, recorded")
        assert len(exotel.calls_of("POST")) == 12
        kill_tree(worker)
        fresh = BotProcess(env, "worker").start()
        try:
            replies = [slack.wait_for_replies(f"k{n}", timeout=180)[0] for n in range(5)]
        finally:
            fresh.stop()
    finally:
        if worker.proc is not None and worker.proc.poll() is None:
            kill_tree(worker)  # failed before its kill: it must not take later tests' jobs
        web.stop()
    texts = [block_text(reply) for reply in replies]
    cut_short = [t for t in texts if "interrupted" in t]  # those the dead worker had in hand
    served = [t for t in texts if "interrupted" not in t]  # finished, or queued till after
    assert cut_short, texts
    assert all("3 WhatsApp onboarding links" in t for t in served), served
    # Every link Exotel made was shown to its requester exactly once.
    assert sum(t.count("isv-onboard/") for t in texts) == len(exotel.tokens)
    assert tracked(redis_url, set(exotel.tokens)) == set(exotel.tokens)


def test_a_command_past_exotels_budget_is_told_when_and_then_served(
    redis_url: str, redis_client, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    env = bot_env(exotel, slack, REDIS_URL=redis_url, EXOTEL_RATE_PER_MINUTE="6")
    web = BotProcess(env, "web").start()
    worker = BotProcess(env, "worker").start()
    try:
        send(web, slack, "first", "5 Early")
        assert "5 WhatsApp" in block_text(slack.wait_for_replies("first", timeout=30)[0])
        send(web, slack, "second", "3 Late")
        wait = block_text(slack.wait_for_replies("second", timeout=30)[0])
        assert "Exotel allows 6 requests a minute" in wait and "your 3 links in about" in wait
        replies = slack.wait_for_replies("second", 2, timeout=120)
        assert "3 WhatsApp onboarding links" in block_text(replies[1])
    finally:
        worker.stop()
        web.stop()
    times = sorted(call.at for call in exotel.calls_of("POST"))
    assert len(times) == 8
    assert all(later - earlier >= 59 for earlier, later in zip(times, times[6:], strict=False))


def test_python_m_bot_killed_outright_leaves_no_process_behind(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    bot = BotProcess(bot_env(exotel, slack, REDIS_URL=redis_url)).start()
    assert bot.proc is not None
    wait_until(lambda: len(descendants_of(bot.proc.pid)) >= 6, 30,
               "web worker, worker pool and its workers started")
    children = descendants_of(bot.proc.pid)
    os.kill(bot.proc.pid, signal.SIGKILL)
    bot.proc.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in children), 30,
               "every process it started exits")
