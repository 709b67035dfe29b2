"""The bot as an operator runs it: `python -m bot`, a real process, real gunicorn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def children_of(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def descendants_of(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in children_of(todo.pop()):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_sigterm_lets_work_in_hand_reach_slack(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    exotel.always = Fault(passthrough=True, delay=2.0)
    bot = BotProcess(bot_env(exotel, slack, REDIS_URL=redis_url), "web").start()
    try:
        body = command_body("/onboard-link", "1 ACME", slack.response_url("late"))
        ack = requests.post(f"{bot.url}/slack/events", data=body.encode(), headers=sign(body),
                            timeout=5)
        assert ack.status_code == 200
        wait_until(lambda: exotel.calls_of("POST"), 5, "the command reached Exotel")
    finally:
        bot.stop()  # while Exotel is still answering
    assert "1 WhatsApp onboarding link" in slack.replies("late")[0]["text"]


def test_a_killed_web_worker_leaves_no_stray_processes(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    bot = BotProcess(bot_env(exotel, slack, REDIS_URL=redis_url), "web").start()
    try:
        assert bot.proc is not None
        [worker] = children_of(bot.proc.pid)  # gunicorn's one worker (WEB_CONCURRENCY=1)
        helpers = descendants_of(worker)  # its background process, and the forkserver
        assert helpers

        os.kill(worker, signal.SIGKILL)

        wait_until(lambda: not any(alive(pid) for pid in helpers), 15,
                   "the dead worker's helper processes exit")
        wait_until(lambda: children_of(bot.proc.pid) not in ([], [worker]), 15,
                   "gunicorn starts a new worker")
        body = command_body("/onboard-link", "1 ACME", slack.response_url("after"))
        wait_until(lambda: requests.post(f"{bot.url}/slack/events", data=body.encode(),
                                         headers=sign(body), timeout=5).ok, 15,
                   "the new worker acks")
        assert "1 WhatsApp onboarding link" in slack.wait_for_replies("after")[0]["text"]
    finally:
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


def test_work_handed_over_after_shutdown_starts_no_new_process(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack, caplog
) -> None:
    from bot import tasks
    from bot.app import build_services
    from tests.conftest import REP, settings_for

    background = build_services(settings_for(redis_url, exotel, slack)).background
    background.shutdown(wait=True)
    before = children_of(os.getpid())

    background.submit(slack.response_url("late"), tasks.issue_links, REP, 1, "too late")

    assert children_of(os.getpid()) == before
    assert "handed over too late was dropped" in caplog.text


def test_a_task_handed_over_after_the_work_process_died_still_runs(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack, caplog
) -> None:
    from bot import tasks
    from bot.app import build_services
    from tests.conftest import REP, settings_for

    background = build_services(settings_for(redis_url, exotel, slack)).background
    try:
        dead = background._process
        dead.kill()
        dead.join(10)

        background.submit(slack.response_url("revived"), tasks.issue_links, REP, 1, "after")

        [reply] = slack.wait_for_replies("revived", 1, timeout=30)
        assert "1 WhatsApp onboarding link" in reply["text"]
        assert background._process.pid != dead.pid
        assert "the work process died; starting a new one" in caplog.text
    finally:
        background.shutdown(wait=True)
