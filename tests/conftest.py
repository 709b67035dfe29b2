from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import requests
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from bot.domain.models import Requester
from bot.domain.store import connect
from bot.exotel.sandbox import ExotelSandbox
from bot.ops.logs import RedactSecrets
from bot.runtime import jobs, worker
from bot.runtime.web import create_wsgi
from bot.settings import Settings, load_settings
from bot.slack.app import create_app
from bot.slack.core import Core, build_core
from tests.fakes.slack import FakeSlack
from tests.support import (
    BOT_TOKEN,
    EXOTEL_KEY,
    EXOTEL_SID,
    EXOTEL_TOKEN,
    SIGNING_SECRET,
    HttpServer,
    RedisProcess,
    ThreadWorker,
    action_body,
    bot_env,
    command_body,
    configured_redis_url,
    event_body,
    sign,
)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = configured_redis_url()
    if url:
        yield url
        return
    server = RedisProcess().start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    client = connect(redis_url)
    client.flushdb()
    return client


@pytest.fixture(scope="session")
def _exotel_server() -> Iterator[ExotelSandbox]:
    sandbox = ExotelSandbox(EXOTEL_KEY, EXOTEL_TOKEN, EXOTEL_SID).start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def exotel(_exotel_server: ExotelSandbox) -> ExotelSandbox:
    _exotel_server.reset()
    return _exotel_server


@pytest.fixture(scope="session")
def _slack_server() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    yield fake
    fake.stop()


@pytest.fixture
def slack(_slack_server: FakeSlack) -> FakeSlack:
    _slack_server.reset()
    return _slack_server


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


@pytest.fixture
def make_bot(redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox,
             slack: FakeSlack) -> Iterator[Callable[..., Bot]]:
    bots: list[Bot] = []

    def make(**overrides: Any) -> Bot:
        core = build_core(settings_for(redis_url, exotel, slack, **overrides))
        jobs.use_core(core)  # the jobs the worker thread runs use this bot's settings
        bot = Bot(core, HttpServer(create_wsgi(create_app(core), core)), slack,
                  ThreadWorker(core))
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        bot.close()
    jobs.use_core(None)


@pytest.fixture
def bot(make_bot: Callable[..., Bot]) -> Bot:
    return make_bot()


def block_text(message: dict[str, Any]) -> str:
    """All the text a Slack message shows, for assertions."""
    blocks = message.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    parts = [message.get("text") or ""]
    for block in blocks:
        if "text" in block:
            parts.append(block["text"]["text"])
        for element in block.get("elements", []):
            if "text" in element:
                parts.append(element["text"] if isinstance(element["text"], str)
                             else element["text"]["text"])
    return "\n".join(parts)


# In-process core, RQ worker and a frozen clock, for what depends on time.
REP = Requester(team_id="T0FAKE", user_id="U0REP", channel_id="C0SALES")
# The frozen clock starts at the real hour: worker processes (which freezegun cannot reach)
# run on the real clock, and a fixed date would fall ever further behind it.
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
REAL_CLOCK = ["urllib3", "bot.exotel.client", "bot.domain.ratelimit", "tenacity"]


@pytest.fixture
def make_core(redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox,
              slack: FakeSlack) -> Iterator[Callable[..., Core]]:
    def make(**overrides: Any) -> Core:
        core = build_core(settings_for(redis_url, exotel, slack, **overrides))
        jobs.use_core(core)
        return core

    yield make
    jobs.use_core(None)


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    # HTTP timeouts and Exotel's deadlines run on the real clock (threads mix the two).
    with freeze_time(START, tick=True, ignore=REAL_CLOCK) as frozen:
        yield frozen


def close_to(moment: datetime | None, expected: datetime) -> bool:
    return moment is not None and abs(moment - expected) < timedelta(seconds=3)


def fire_due(core: Core) -> None:
    """What a worker with its scheduler does: move due jobs onto their queues, run them."""
    worker.build_worker(core).work(burst=True, with_scheduler=True, logging_level="WARNING")




# No log line of the whole run may hold a secret or a full onboarding token. The bot's own
# logging (bot.logs.configure) scrubs each record before any handler sees it; the same filter
# sits first on the root logger here, and every line the run produced is checked at the end.
FULL_TOKEN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_any_log_line() -> Iterator[None]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(level=logging.DEBUG)
    handler.addFilter(RedactSecrets([EXOTEL_TOKEN, BOT_TOKEN, SIGNING_SECRET]))
    root = logging.getLogger()
    root.handlers.insert(0, handler)
    level = root.level
    root.setLevel(logging.INFO)  # as the bot runs; tests may ask for DEBUG themselves
    yield
    root.setLevel(level)
    root.removeHandler(handler)
    secrets = (EXOTEL_TOKEN, BOT_TOKEN, SIGNING_SECRET)
    leaks = [line for line in lines
             if any(s in line for s in secrets) or FULL_TOKEN.search(line)]
    assert not leaks, f"{len(leaks)} log lines leak a secret or token, e.g. {leaks[0][:300]}"
