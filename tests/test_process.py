"""The bot as an operator runs it: `python -m bot`, a real process, real gunicorn."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from bot.sandbox import ExotelSandbox, Fault
from tests.fakes.slack import FakeSlack
from tests.support import (
    BOT_TOKEN,
    EXOTEL_TOKEN,
    ROOT,
    BotProcess,
    bot_env,
    command_body,
    percentile,
    sign,
    timed_commands,
    timed_commands_elsewhere,
)


def test_without_slack_settings_the_bot_stops_and_names_them(tmp_path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bot"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "EXOTEL_API_KEY",
                 "EXOTEL_API_TOKEN", "EXOTEL_ACCOUNT_SID"):
        assert name in done.stderr
    assert "Traceback" not in done.stderr


def test_python_m_bot_serves_commands_and_stops_on_sigterm(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    bot = BotProcess(bot_env(exotel, slack, REDIS_URL=redis_url)).start()
    try:
        body = command_body("/onboard-link", "2 ACME", slack.response_url("proc"))
        ack = requests.post(f"{bot.url}/slack/events", data=body.encode(), headers=sign(body),
                            timeout=5)
        assert ack.status_code == 200
        reply = slack.wait_for_replies("proc")[0]
        assert "2 WhatsApp onboarding links" in reply["text"]
        assert len(exotel.calls_of("POST")) == 2
    finally:
        assert bot.stop() < 10
    output = bot.output()
    assert EXOTEL_TOKEN not in output and BOT_TOKEN not in output


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


def test_acks_stay_fast_while_exotel_takes_a_second(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    """200 commands, 20 at a time, against the web process: p99 ack under 100 ms."""
    bot = BotProcess(bot_env(exotel, slack, REDIS_URL=redis_url, WEB_CONCURRENCY="2",
                             EXOTEL_RATE_PER_MINUTE="100000",
                             MAX_LINKS_PER_USER_PER_DAY="1000000")).start()
    exotel.always = Fault(passthrough=True, delay=1)
    try:
        timed_commands(bot.url, slack.response_url("warm"), 100, 20, "help")  # connections, caches
        latencies = timed_commands_elsewhere(bot.url, slack.response_url("load"), 200, 20)
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        assert p99 < 0.1, f"ack p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
        # Every command's work still finishes: one link each.
        assert len(slack.wait_for_replies("load", 200, timeout=60)) == 200
        print(f"ack p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    finally:
        bot.stop()
