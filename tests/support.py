"""Helpers of the tests (fixtures are in conftest.py): the bot in process, served over real
HTTP with an RQ worker on a thread; its settings; the frozen clock's start."""

from __future__ import annotations

import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
import requests

from bot.domain.models import Requester
from bot.exotel.sandbox import CONTROL_PREFIX, ExotelSandbox
from bot.runtime import worker
from bot.settings import Settings, load_settings
from bot.slack.core import Core
from testkit.env import bot_env
from testkit.signed import action_body, command_body, event_body, sign
from testkit.slack import FakeSlack


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


class ThreadWorker:
    """A real RQ worker of the bot's queues (`bot.worker.Worker`), on a thread of the test
    process, so that jobs run with the test's core and their logs are the test's. RQ's
    signal-based job timeouts need the main thread; here a timer thread times them."""

    def __init__(self, core: Any, queues: list[Any] | None = None) -> None:
        from rq.timeouts import TimerDeathPenalty

        from bot.runtime.worker import Worker

        class _Threaded(Worker):
            death_penalty_class = TimerDeathPenalty

        self._worker = _Threaded(queues or [core.commands.queue, core.reminders.queue],
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


def settings_for(redis_url: str, exotel: ExotelSandbox, slack: FakeSlack,
                  **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        **bot_env(exotel, slack), "REDIS_URL": redis_url, "EXOTEL_TIMEOUT": 2,
        "EXOTEL_DEADLINE": 8, "EXOTEL_RATE_PER_MINUTE": 100_000, **overrides,
    }
    return load_settings(_env_file=None, **values)


@dataclass
class Reply:
    """A command's HTTP answer (the ack) and where its later replies arrive."""

    http: requests.Response
    name: str
    slack: FakeSlack

    @property
    def ack(self) -> dict[str, Any]:
        return self.http.json() if self.http.content else {}

    def replies(self, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        return self.slack.wait_for_replies(self.name, count, timeout)

    def final(self, timeout: float = 30) -> dict[str, Any]:
        return self.replies(1, timeout)[0]


@dataclass
class Bot:
    core: Core
    server: HttpServer
    slack: FakeSlack
    worker: ThreadWorker
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return self.server.url

    def command(self, command: str, text: str = "", **fields: Any) -> Reply:
        name = uuid.uuid4().hex
        return self._send(name, command_body(command, text, self.slack.response_url(name),
                                             **fields))

    def click(self, action_id: str, value: str, **fields: Any) -> Reply:
        name = uuid.uuid4().hex
        return self._send(name, action_body(action_id, value, self.slack.response_url(name),
                                            **fields))

    def event(self, event: dict[str, Any]) -> requests.Response:
        body = event_body(event)
        headers = {**sign(body), "Content-Type": "application/json"}
        return self.session.post(f"{self.url}/slack/events", data=body.encode(),
                                 headers=headers, timeout=10)

    def _send(self, name: str, body: str) -> Reply:
        http = self.session.post(f"{self.url}/slack/events", data=body.encode(),
                                 headers=sign(body), timeout=10)
        return Reply(http, name, self.slack)

    def close(self) -> None:
        self.server.stop()
        self.worker.stop()


# In-process core, RQ worker and a frozen clock, for what depends on time.
REP = Requester(team_id="T0FAKE", user_id="U0REP", channel_id="C0SALES")
# The frozen clock starts at the real hour: worker processes (which freezegun cannot reach)
# run on the real clock, and a fixed date would fall ever further behind it.
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
REAL_CLOCK = ["urllib3", "bot.exotel.client", "bot.domain.ratelimit", "tenacity",
              "_pytest.timing"]  # pytest's own timings (--durations) stay true


def close_to(moment: datetime | None, expected: datetime) -> bool:
    return moment is not None and abs(moment - expected) < timedelta(seconds=3)


def fire_due(core: Core) -> None:
    """What a worker with its scheduler does: move due jobs onto their queues, run them."""
    worker.drain(core)


# What `python -m bot doctor` checks, in order, and its marks against the shared fakes.
CHECK_NAMES = ["settings", "slack", "slack scopes", "slack app token", "exotel", "redis",
               "redis persistence", "workers", "webhooks"]
# Against the shared fakes in HTTP mode: the fake sends no scopes header, there is no
# app token to check, and no WEBHOOK_URLS.
FAKE_MARKS = ["✓", "✓", "–", "–", "✓", "✓", "✓", "✓", "–"]


# The Exotel sandbox over HTTP.

def isv(response: requests.Response) -> dict[str, Any]:
    return response.json()["response"]["whatsapp"]["isv"]


def mark(exotel_url: str, token: str, customers: object = None) -> requests.Response:
    params = {} if customers is None else {"customers": customers}
    return requests.post(f"{exotel_url}{CONTROL_PREFIX}{token}/onboard", params=params,
                         timeout=5)


class NoLimit:
    """A limiter for the Exotel client that never waits."""

    def acquire(self, deadline: float) -> None:
        return None


class FakeClock:
    """A monotonic clock that moves only when something sleeps on it: deadlines, backoffs
    and Retry-After waits are checked from what was slept, without waiting them out."""

    START = 1000.0

    def __init__(self) -> None:
        self.now = self.START
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    @property
    def elapsed(self) -> float:
        return self.now - self.START


METRICS_TOKEN = "metrics-token-3f9c1a7e5b"


def scrape_metrics(url: str) -> dict[str, float]:
    """The samples of `url`/metrics, read as Prometheus would (with the bearer token)."""
    response = requests.get(f"{url}/metrics", timeout=10,
                            headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    values = {}
    for line in response.text.splitlines():
        match = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values
