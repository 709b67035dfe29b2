"""The bot as an operator runs it: `python -m bot`, a real process, real gunicorn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import requests

from bot.exotel.sandbox import ExotelSandbox, Fault
from testkit.env import BOT_TOKEN, EXOTEL_TOKEN, ROOT, bot_env
from testkit.processes import BotProcess, children_of
from testkit.signed import command_body, sign
from testkit.slack import FakeSlack
from testkit.wait import wait_until

pytestmark = pytest.mark.slow


def test_without_slack_settings_the_bot_stops_and_names_them(tmp_path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bot"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "EXOTEL_API_KEY",
                 "EXOTEL_API_TOKEN", "EXOTEL_ACCOUNT_SID"):
        assert name in done.stderr
    assert "Traceback" not in done.stderr


def command(url: str, slack: FakeSlack, text: str, name: str) -> None:
    """A signed /onboard-link to `url`, acknowledged; its replies go to response URL `name`."""
    body = command_body("/onboard-link", text, slack.response_url(name))
    ack = requests.post(f"{url}/slack/events", data=body.encode(), headers=sign(body),
                        timeout=5)
    assert ack.status_code == 200


def test_python_m_bot_serves_commands_and_stops_on_sigterm(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    bot = BotProcess(bot_env(exotel, slack, REDIS_URL=redis_url)).start()
    try:
        command(bot.url, slack, "2 ACME proc", "proc")
        reply = slack.wait_for_replies("proc")[0]
        assert "2 WhatsApp onboarding links" in reply["text"]
        assert len(exotel.calls_of("POST")) == 2
    finally:
        bot.stop(timeout=10)  # fails unless it exits on SIGTERM
    output = bot.output()
    assert EXOTEL_TOKEN not in output and BOT_TOKEN not in output


@pytest.mark.parametrize("layout", [("web", "worker"), ("all",)],
                         ids=["procfile", "python -m bot"])
def test_sigterm_lets_the_workers_finish_the_job_in_hand(
    layout: tuple[str, ...], redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    exotel.always = Fault(passthrough=True, delay=2.0)
    env = bot_env(exotel, slack, REDIS_URL=redis_url)
    # `python -m bot` ("all") runs its web and its forked worker pool as one.
    bots = [BotProcess(env, *(() if kind == "all" else (kind,))).start() for kind in layout]
    try:
        name = f"late-{len(layout)}"  # each its own customer: a live link would be answered
        command(bots[0].url, slack, f"1 ACME {name}", name)
        wait_until(lambda: exotel.calls_of("POST"), 15, "the command reached Exotel")
        bots[-1].stop(timeout=20)  # the workers' process, while Exotel is still answering
    finally:
        for bot in reversed(bots):
            bot.stop()
    assert "1 WhatsApp onboarding link" in slack.replies(name)[0]["text"]


def test_a_killed_web_worker_is_replaced_and_the_next_command_works(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    env = bot_env(exotel, slack, REDIS_URL=redis_url)
    bot = BotProcess(env, "web").start()
    worker = BotProcess(env, "worker").start()
    try:
        assert bot.proc is not None
        [web_worker] = children_of(bot.proc.pid)  # gunicorn's one worker (WEB_CONCURRENCY=1)
        os.kill(web_worker, signal.SIGKILL)
        wait_until(lambda: children_of(bot.proc.pid) not in ([], [web_worker]), 15,
                   "gunicorn starts a new worker")
        body = command_body("/onboard-link", "1 ACME after", slack.response_url("after"))
        wait_until(lambda: requests.post(f"{bot.url}/slack/events", data=body.encode(),
                                         headers=sign(body), timeout=5).ok, 15,
                   "the new worker acks")
        assert "1 WhatsApp onboarding link" in slack.wait_for_replies("after")[0]["text"]
    finally:
        worker.stop()
        bot.stop()


def test_without_redis_url_the_bot_runs_an_embedded_redis(
    tmp_path, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    bot = BotProcess(bot_env(exotel, slack, ONBOARD_DATA_DIR=str(tmp_path / "data"))).start()
    try:
        assert requests.get(f"{bot.url}/healthz", timeout=5).status_code == 200
    finally:
        bot.stop()
    assert "embedded Redis" in bot.output()
    assert (tmp_path / "data").is_dir()
