"""Fixtures only (helpers are in support.py, blockkit.py and testkit/): a real Redis, the
Exotel sandbox and the fake Slack for the session, the bot or its core per test, a frozen
clock, and the run-wide check that no log line holds a secret."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from bot.domain.store import connect
from bot.exotel.sandbox import ExotelSandbox
from bot.runtime import execution
from bot.runtime.app import create_app
from bot.runtime.composition import build_core
from bot.runtime.web import create_wsgi
from bot.slack.core import Core
from bot.telemetry.logs import RedactSecrets
from testkit.env import BOT_TOKEN, EXOTEL_KEY, EXOTEL_SID, EXOTEL_TOKEN, SIGNING_SECRET
from testkit.processes import RedisProcess
from testkit.slack import FakeSlack
from tests.support import (
    REAL_CLOCK,
    START,
    Bot,
    HttpServer,
    ThreadWorker,
    configured_redis_url,
    settings_for,
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


@pytest.fixture
def make_bot(redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox,
             slack: FakeSlack) -> Iterator[Callable[..., Bot]]:
    bots: list[Bot] = []

    def make(**overrides: Any) -> Bot:
        core = build_core(settings_for(redis_url, exotel, slack, **overrides))
        execution.use_core(core)  # the jobs the worker thread runs use this bot's settings
        bot = Bot(core, HttpServer(create_wsgi(create_app(core), core)), slack,
                  ThreadWorker(core))
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        bot.close()
    execution.use_core(None)


@pytest.fixture
def bot(make_bot: Callable[..., Bot]) -> Bot:
    return make_bot()


@pytest.fixture
def make_core(redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox,
              slack: FakeSlack) -> Iterator[Callable[..., Core]]:
    def make(**overrides: Any) -> Core:
        core = build_core(settings_for(redis_url, exotel, slack, **overrides))
        execution.use_core(core)
        return core

    yield make
    execution.use_core(None)


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    # HTTP timeouts and Exotel's deadlines run on the real clock (threads mix the two).
    with freeze_time(START, tick=True, ignore=REAL_CLOCK) as frozen:
        yield frozen


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
