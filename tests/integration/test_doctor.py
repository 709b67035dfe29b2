"""`python -m bot doctor`: each check on its own, and the command as an operator runs it."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker

from bot.cli import doctor
from bot.engine.registry import COMMANDS_QUEUE, QUEUES, REMINDERS_QUEUE, STATUS_QUEUE
from bot.exotel.sandbox import ExotelSandbox
from bot.runtime import embedded_redis
from testkit.env import APP_TOKEN, BOT_TOKEN
from testkit.processes import RedisProcess, closed_redis_url, free_port
from testkit.slack import FakeSlack
from tests.support import CHECK_NAMES, FAKE_MARKS, settings_for

MANIFEST_SCOPES = ["commands", "chat:write", "chat:write.public", "im:write", "usergroups:read",
                   "channels:history", "groups:history", "im:history", "links:read",
                   "links:write", "users:read", "team:read", "files:write"]


class ScriptedSlack:
    """A Slack Web API answering every method with one fixed body and extra headers."""

    def __init__(self, answer: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.methods: list[str] = []
        body = json.dumps(answer).encode()
        extra = headers or {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.methods.append(self.path.rsplit("/", 1)[-1])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    def __enter__(self) -> ScriptedSlack:
        # A short poll interval: shutdown() waits for it.
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


AUTH_OK = {"ok": True, "url": "https://acme.slack.com/", "team": "Acme", "user": "onboard-bot",
           "team_id": "T0ACME", "user_id": "U0BOT", "bot_id": "B0BOT"}


@contextmanager
def registered_workers(redis_url: str, queues: tuple[str, ...] = QUEUES
                       ) -> Iterator[list[SimpleWorker]]:
    """An RQ worker registered on each of `queues`, as a running pool's are, not running."""
    connection = redis.Redis.from_url(redis_url)
    workers = [SimpleWorker([Queue(name, connection=connection)], connection=connection)
               for name in queues]
    for worker in workers:
        worker.register_birth()
    try:
        yield workers
    finally:
        for worker in workers:
            worker.register_death()


# The checks, called directly --------------------------------------------------------------


def test_every_check_passes_against_the_fakes(
    exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    out = io.StringIO()
    # The suite's Redis persists nothing, which the doctor rightly fails: one that does.
    with RedisProcess(options={"appendonly": "yes"}) as durable, \
            registered_workers(durable.url):
        settings = settings_for(durable.url, exotel, slack)
        assert doctor.run_doctor(settings, out) == 0
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"{mark} {name}" for mark, name in zip(FAKE_MARKS, CHECK_NAMES, strict=True)]
    text = out.getvalue()
    assert "auth.test ok: bot onboard-bot (U0BOT) in workspace Fake (T0FAKE)" in text
    assert (f"✓ workers: 3 running: 1 on {COMMANDS_QUEUE}, 1 on {REMINDERS_QUEUE}, 1 on "
            f"{STATUS_QUEUE} (heartbeat") in text
    assert [c.query["access_token"] for c in exotel.calls_of("GET")] == [[doctor.PROBE_TOKEN]]
    assert len(slack.calls("auth.test")) == 1
    for secret in settings.secrets():
        assert secret not in text


def test_without_the_scopes_header_the_doctor_cannot_tell_and_says_so(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    # The shared fake's auth.test sends no x-oauth-scopes header: not knowing is no failure.
    checks = doctor.check_slack(settings_for(redis_url, exotel, slack))
    assert [c.ok for c in checks] == [True, True]
    assert [c.skipped for c in checks] == [False, True]
    assert checks[1].line().startswith("– slack scopes: skipped (cannot tell: ")
    assert "chat:write.public" in checks[1].detail  # what it would have wanted


def test_granted_scopes_are_compared_with_the_manifest(
    redis_url: str, exotel: ExotelSandbox
) -> None:
    granted = ",".join([*MANIFEST_SCOPES, "channels:read"])
    with ScriptedSlack(AUTH_OK, {"x-oauth-scopes": granted}) as fake:
        settings = settings_for(redis_url, exotel, fake, SLACK_API_URL=fake.api_url)
        checks = doctor.check_slack(settings)
    assert [c.line() for c in checks] == [
        "✓ slack: auth.test ok: bot onboard-bot (U0BOT) in workspace Acme (T0ACME)",
        "✓ slack scopes: all 13 of manifest.yml's bot scopes granted (also granted: "
        "channels:read)",
    ]
    assert fake.methods == ["auth.test"]


def test_missing_scopes_fail_with_the_names_and_the_fix(
    redis_url: str, exotel: ExotelSandbox
) -> None:
    with ScriptedSlack(AUTH_OK, {"X-OAuth-Scopes": "commands, chat:write"}) as fake:
        checks = doctor.check_slack(settings_for(redis_url, exotel, fake,
                                                 SLACK_API_URL=fake.api_url))
    auth, scopes = checks
    assert auth.ok and not scopes.ok
    assert scopes.line() == (
        "✗ slack scopes: the bot token lacks chat:write.public, im:write, usergroups:read, "
        "channels:history, groups:history, im:history, links:read, links:write, users:read, "
        "team:read, files:write — "
        "add them under OAuth & Permissions (or update the app from manifest.yml) and "
        "reinstall the app to the workspace")


def test_a_wrong_slack_token_fails_with_the_fix(redis_url: str, exotel: ExotelSandbox) -> None:
    with ScriptedSlack({"ok": False, "error": "invalid_auth"}) as fake:
        settings = settings_for(redis_url, exotel, fake, SLACK_API_URL=fake.api_url)
        auth, scopes = doctor.check_slack(settings)
    assert auth.line().startswith("✗ slack: Slack rejected the bot token (invalid_auth) — "
                                  "set SLACK_BOT_TOKEN to the Bot User OAuth Token")
    assert not scopes.ok and "not checked" in scopes.detail
    assert BOT_TOKEN not in auth.line() + scopes.line()


def test_an_unreachable_slack_fails_naming_the_url(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/"
    auth, _ = doctor.check_slack(settings_for(redis_url, exotel, slack, SLACK_API_URL=url))
    assert not auth.ok
    assert f"could not reach Slack at {url}" in auth.detail


def test_the_manifest_scopes_are_read_without_a_yaml_library() -> None:
    assert doctor.manifest_bot_scopes(doctor.MANIFEST) == MANIFEST_SCOPES
    text = """
display_information:
  background_color: "#1d3557"  # a quoted hash is no comment
bot:
  - not-these
oauth_config:
  redirect_urls: [https://example.com/a]
  scopes:
    user: [search:read]
    bot:
    - "commands"   # at the key's own indentation, quoted
    - chat:write
    # a comment between items
    - 'im:write'
settings:
  bot:
    - nor-these
"""
    assert doctor.yaml_list(text, ["oauth_config", "scopes", "bot"]) == [
        "commands", "chat:write", "im:write"]
    flow = "oauth_config:\n  scopes:\n    bot: [commands, 'chat:write']\n"
    assert doctor.yaml_list(flow, ["oauth_config", "scopes", "bot"]) == [
        "commands", "chat:write"]


def test_a_wrong_exotel_token_fails_with_the_fix(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    check = doctor.check_exotel(settings_for(redis_url, exotel, slack,
                                             EXOTEL_API_TOKEN="not-the-token-4f1"))
    assert check.line() == (
        f"✗ exotel: {exotel.url} rejected the credentials (HTTP 401) — check EXOTEL_API_KEY, "
        "EXOTEL_API_TOKEN and EXOTEL_ACCOUNT_SID (Exotel dashboard, API settings) and "
        "EXOTEL_REGION")
    assert len(exotel.calls_of("GET")) == 1  # a refusal is not retried


def test_good_exotel_credentials_pass_on_a_404_for_the_made_up_token(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    check = doctor.check_exotel(settings_for(redis_url, exotel, slack))
    assert check.ok
    assert "credentials accepted" in check.detail and "HTTP 404" in check.detail


def test_an_unreachable_exotel_fails(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    settings = settings_for(redis_url, exotel, slack, EXOTEL_DEADLINE=1,
                            EXOTEL_BASE_URL=f"http://127.0.0.1:{free_port()}")
    check = doctor.check_exotel(settings)
    assert not check.ok
    assert "could not be reached" in check.detail
    assert "EXOTEL_BASE_URL" in check.fix


def test_redis_reports_its_version(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    # The suite's Redis runs with --save "" --appendonly no.
    check = doctor.check_redis(settings_for(redis_url, exotel, slack))
    version = redis.Redis.from_url(redis_url, decode_responses=True).info()["redis_version"]
    assert check.ok
    assert f"Redis {version}" in check.detail


def test_a_redis_that_persists_nothing_fails_with_why_and_how_to_fix(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    # The suite's Redis runs with --save "" --appendonly no.
    check = doctor.check_persistence(settings_for(redis_url, exotel, slack))
    assert not check.ok
    assert "loses every tracked link and every scheduled reminder" in check.detail
    assert "appendonly yes" in check.fix


def test_rdb_only_passes_with_a_warning_and_aof_passes(
    exotel: ExotelSandbox, slack: FakeSlack, tmp_path
) -> None:
    with RedisProcess() as server:
        redis.Redis.from_url(server.url).config_set("save", "900 1")  # it starts with none
        rdb = doctor.check_persistence(settings_for(server.url, exotel, slack))
    assert rdb.ok and "RDB snapshots only (save 900 1)" in rdb.detail
    assert "Warning: a crash of Redis loses every link and reminder since the last " \
        "snapshot" in rdb.detail
    with RedisProcess(options={"appendonly": "yes"}) as server:
        aof = doctor.check_persistence(settings_for(server.url, exotel, slack))
    assert aof.line() == "✓ redis persistence: append-only file on"


def test_persistence_behind_a_disabled_config_command_is_unknown_not_failed(
    exotel: ExotelSandbox, slack: FakeSlack, tmp_path
) -> None:
    with RedisProcess(options={"rename-command": ("CONFIG", "")}) as server:
        check = doctor.check_persistence(settings_for(server.url, exotel, slack))
    assert check.ok and check.detail.startswith("could not check: CONFIG is disabled")
    embedded = doctor.check_persistence(settings_for(
        "unused", exotel, slack, REDIS_URL=None, ONBOARD_DATA_DIR=str(tmp_path / "data")))
    assert embedded.ok and "append-only file" in embedded.detail
    assert not (tmp_path / "data").exists()


def test_redis_down_fails_with_how_to_fix(exotel: ExotelSandbox, slack: FakeSlack) -> None:
    url = closed_redis_url()
    settings = settings_for(url, exotel, slack)
    check = doctor.check_redis(settings)
    assert check.line().startswith(f"✗ redis: cannot reach {url} (")
    assert check.fix.startswith("start Redis there, fix REDIS_URL")
    workers = doctor.check_workers(settings)
    assert not workers.ok and "start them: python -m bot worker" in workers.fix


def test_redis_passwords_are_never_shown(exotel: ExotelSandbox, slack: FakeSlack) -> None:
    with RedisProcess(options={"requirepass": "right-pass-9a"}) as server:
        wrong = server.url.replace("redis://", "redis://:wrong-pass-3b@")
        check = doctor.check_redis(settings_for(wrong, exotel, slack))
    assert not check.ok and "refused the password" in check.detail
    assert "wrong-pass-3b" not in check.line()
    down = closed_redis_url().replace("redis://", "redis://:wrong-pass-3b@")
    assert "wrong-pass-3b" not in doctor.check_redis(settings_for(down, exotel, slack)).line()
    assert doctor.safe_url("redis://u:p4ss@h:6380/1") == "redis://u:***@h:6380/1"


def test_the_workers_check_counts_the_workers_on_each_queue(
    redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    settings = settings_for(redis_url, exotel, slack)
    none = doctor.check_workers(settings)
    assert not none.ok and none.detail.startswith(
        f"no worker on {COMMANDS_QUEUE}: commands and buttons are not answered; no worker on "
        f"{REMINDERS_QUEUE}: expiry reminders are not sent; no worker on {STATUS_QUEUE}: ")
    assert none.fix == "start them: python -m bot worker (python -m bot runs them beside itself)"
    with registered_workers(redis_url, (REMINDERS_QUEUE,)):
        some = doctor.check_workers(settings)
    assert not some.ok and f"no worker on {COMMANDS_QUEUE}" in some.detail
    assert some.detail.endswith(
        f"(0 on {COMMANDS_QUEUE}, 1 on {REMINDERS_QUEUE}, 0 on {STATUS_QUEUE})")
    with registered_workers(redis_url, (COMMANDS_QUEUE, COMMANDS_QUEUE, *QUEUES)):
        alive = doctor.check_workers(settings)
    assert alive.ok and alive.detail.startswith(
        f"5 running: 3 on {COMMANDS_QUEUE}, 1 on {REMINDERS_QUEUE}, 1 on {STATUS_QUEUE} "
        "(heartbeat")
    assert not doctor.check_workers(settings).ok  # gone again once they deregistered


def test_with_redis_url_unset_and_no_bot_running_there_is_nothing_to_reach(
    exotel: ExotelSandbox, slack: FakeSlack, tmp_path
) -> None:
    settings = doctor.with_running_redis(settings_for(
        "unused", exotel, slack, REDIS_URL=None, ONBOARD_DATA_DIR=str(tmp_path / "data")))
    assert settings.redis_url is None
    redis_check, workers_check = doctor.check_redis(settings), doctor.check_workers(settings)
    assert redis_check.skipped and "embedded Redis" in redis_check.detail
    assert redis_check.line().startswith("– redis: skipped (REDIS_URL is not set and no "
                                         "`python -m bot` is running")
    assert "start the bot with `python -m bot`" in redis_check.detail
    assert workers_check.line() == ("– workers: skipped (no `python -m bot` is running: start "
                                    "it to check its workers)")
    assert not (tmp_path / "data").exists()


def test_with_redis_url_unset_the_doctor_checks_the_running_bots_embedded_redis(
    exotel: ExotelSandbox, slack: FakeSlack, tmp_path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sock = str(embedded_redis.socket_path(data))  # where `python -m bot` has its server
    settings = settings_for("unused", exotel, slack, REDIS_URL=None, ONBOARD_DATA_DIR=str(data))
    out = io.StringIO()
    with RedisProcess(options={"unixsocket": sock, "appendonly": "yes"}), \
            registered_workers(f"unix://{sock}"):
        assert doctor.run_doctor(settings, out) == 0
    lines = dict(line.split(": ", 1) for line in out.getvalue().splitlines())
    assert lines["✓ redis"].startswith(f"unix://{sock} answers, Redis ")
    assert lines["✓ redis persistence"].startswith("append-only file on")
    assert lines["✓ workers"].startswith("3 running: 1 on ")


# The Socket Mode token, progress and bounds ------------------------------------------------


def test_a_good_app_token_passes_and_a_bad_one_fails(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    good = doctor.check_app_token(settings_for(redis_url, exotel, slack,
                                               SLACK_APP_TOKEN=APP_TOKEN))
    assert good.ok and not good.skipped and "apps.connections.open ok" in good.detail
    assert slack.calls("apps.connections.open")[-1].authorization == f"Bearer {APP_TOKEN}"
    wrong = "xapp-wrong-app-token-77aa"
    bad = doctor.check_app_token(settings_for(redis_url, exotel, slack, SLACK_APP_TOKEN=wrong))
    assert bad.line().startswith("✗ slack app token: Slack rejected the app token "
                                 "(invalid_auth) — set SLACK_APP_TOKEN to an app-level token")
    assert wrong not in bad.line()
    unset = doctor.check_app_token(settings_for(redis_url, exotel, slack))
    assert unset.line() == ("– slack app token: skipped (SLACK_APP_TOKEN is not set: HTTP "
                            "mode needs none)")


def test_each_step_is_announced_before_its_result(
    redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    both = io.StringIO()
    doctor.run_doctor(settings_for(redis_url, exotel, slack), both, both)
    lines = both.getvalue().splitlines()
    for label, _ in doctor.STEPS:
        started = lines.index(f"… checking {label}")
        result = next(i for i, line in enumerate(lines) if line[2:].startswith(f"{label}:"))
        assert started < result, lines


def test_a_silent_exotel_is_given_up_on_at_the_doctors_bound(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that accepts connections and never answers: only the timeout ends the wait.
    import socket

    monkeypatch.setattr(doctor, "EXOTEL_TIMEOUT", 0.5)
    monkeypatch.setattr(doctor, "EXOTEL_DEADLINE", 1.0)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        # The settings allow 600 s: were they what bounded the wait, the suite's 120 s
        # timeout (pytest-timeout) would fail this test.
        settings = settings_for(redis_url, exotel, slack, EXOTEL_TIMEOUT=600,
                                EXOTEL_DEADLINE=600,
                                EXOTEL_BASE_URL=f"http://127.0.0.1:{silent.getsockname()[1]}")
        check = doctor.check_exotel(settings)
    finally:
        silent.close()
    assert not check.ok
