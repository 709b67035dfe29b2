"""`python -m bot doctor` as an operator runs it: its lines, its exit status, no secret."""

from __future__ import annotations

import os
import subprocess
import sys

import redis
from rq import Worker

from bot.cli import doctor
from bot.engine.registry import COMMANDS_QUEUE, REMINDERS_QUEUE, STATUS_QUEUE
from bot.exotel.sandbox import ExotelSandbox
from bot.runtime import embedded_redis
from testkit.env import BOT_TOKEN, EXOTEL_TOKEN, ROOT, SIGNING_SECRET, bot_env
from testkit.processes import BotProcess, RedisProcess, closed_redis_url
from testkit.slack import FakeSlack
from testkit.wait import wait_until
from tests.support import CHECK_NAMES, FAKE_MARKS


def test_python_m_bot_doctor_fails_on_a_redis_that_persists_nothing(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack, tmp_path
) -> None:
    # The suite's Redis runs with --save "" --appendonly no.
    done = run_doctor_process(bot_env(exotel, slack, REDIS_URL=redis_url), str(tmp_path))
    assert done.returncode == 1
    assert "✗ redis persistence: this Redis persists nothing" in done.stdout


def run_doctor_process(env: dict[str, str], home: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ.get("PATH", ""), "HOME": home, "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run([sys.executable, "-m", "bot", "doctor"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)



def test_python_m_bot_doctor_passes_with_a_real_worker(
    exotel: ExotelSandbox, slack: FakeSlack, tmp_path
) -> None:
    with RedisProcess(options={"appendonly": "yes"}) as durable:
        env = bot_env(exotel, slack, REDIS_URL=durable.url)
        worker = BotProcess(env, "worker").start()
        try:
            done = run_doctor_process(env, str(tmp_path))
        finally:
            worker.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"{mark} {name}" for mark, name in zip(FAKE_MARKS, CHECK_NAMES, strict=True)]
    # Each check's name went to stderr as it started, in order.
    assert [line for line in done.stderr.splitlines() if line.startswith("… checking ")] == [
        f"… checking {label}" for label, _ in doctor.STEPS]
    workers = next(line for line in lines if line.startswith("✓ workers: "))
    assert workers.startswith(f"✓ workers: 6 running: 4 on {COMMANDS_QUEUE}, 1 on "
                              f"{REMINDERS_QUEUE}, 1 on {STATUS_QUEUE}")  # the pool's staff
    output = done.stdout + done.stderr
    for secret in (BOT_TOKEN, SIGNING_SECRET, EXOTEL_TOKEN):
        assert secret not in output



def test_python_m_bot_doctor_fails_with_one_line_per_problem(
    exotel: ExotelSandbox, slack: FakeSlack, tmp_path
) -> None:
    wrong_token = "wrong-exotel-token-0c9d"
    redis_url = closed_redis_url()
    env = bot_env(exotel, slack, REDIS_URL=redis_url, EXOTEL_API_TOKEN=wrong_token)
    done = run_doctor_process(env, str(tmp_path))
    assert done.returncode == 1
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert set(lines) == {"✓ settings", "✓ slack", "– slack scopes", "– slack app token",
                          "✗ exotel", "✗ redis", "✓ redis persistence", "✗ workers",
                          "– webhooks"}
    assert lines["✓ redis persistence"].startswith("could not check")
    assert "rejected the credentials (HTTP 401)" in lines["✗ exotel"]
    assert lines["✗ redis"].startswith(f"cannot reach {redis_url}")
    assert wrong_token not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr



def test_python_m_bot_doctor_starts_no_embedded_redis(
    exotel: ExotelSandbox, slack: FakeSlack, tmp_path
) -> None:
    data = tmp_path / "data"
    done = run_doctor_process(bot_env(exotel, slack, ONBOARD_DATA_DIR=str(data)), str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "– redis: skipped (REDIS_URL is not set and no `python -m bot` is running" \
        in done.stdout
    assert "start the bot with `python -m bot`" in done.stdout
    assert "– workers: skipped (no `python -m bot` is running" in done.stdout
    assert "✓ redis" not in done.stdout and "✓ workers" not in done.stdout
    assert not data.exists()


def test_python_m_bot_doctor_checks_the_embedded_redis_and_workers_of_a_running_bot(
    exotel: ExotelSandbox, slack: FakeSlack, tmp_path
) -> None:
    data = tmp_path / "data"
    env = bot_env(exotel, slack, ONBOARD_DATA_DIR=str(data))  # no REDIS_URL: embedded
    bot = BotProcess(env)  # `python -m bot`: embedded Redis, web, and the pool beside
    try:
        bot.start(timeout=60)
        url = embedded_redis.running(data)
        assert url is not None
        wait_until(lambda: len(Worker.all(connection=redis.Redis.from_url(url))) == 6, 60,
                   "the pool's 6 workers registered")  # WORKER_PROCESSES + 2
        done = run_doctor_process(env, str(tmp_path))
    finally:
        bot.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines["✓ redis"].startswith(f"{url} answers, Redis ")
    assert lines["✓ redis persistence"].startswith("append-only file on")
    assert lines["✓ workers"].startswith(
        f"6 running: 4 on {COMMANDS_QUEUE}, 1 on {REMINDERS_QUEUE}, 1 on {STATUS_QUEUE}")



def test_python_m_bot_doctor_with_bad_settings_names_them(
    exotel: ExotelSandbox, slack: FakeSlack, tmp_path
) -> None:
    env = bot_env(exotel, slack)
    del env["EXOTEL_API_KEY"]
    done = run_doctor_process(env, str(tmp_path))
    assert done.returncode == 2
    assert "- EXOTEL_API_KEY: missing" in done.stderr



def test_python_m_bot_doctor_with_a_bad_app_token_shows_a_cross(
    redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox, slack: FakeSlack, tmp_path
) -> None:
    wrong = "xapp-wrong-app-token-5d21"
    env = bot_env(exotel, slack, REDIS_URL=redis_url, SLACK_APP_TOKEN=wrong)
    done = run_doctor_process(env, str(tmp_path))
    assert done.returncode == 1
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines["✗ slack app token"].startswith("Slack rejected the app token (invalid_auth)")
    assert wrong not in done.stdout + done.stderr
