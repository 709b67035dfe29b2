"""What a job writes at INFO: one line of the bot's own; RQ's routine lines only at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from rq import Queue
from rq.logutils import setup_loghandlers

from bot.domain.models import Requester
from bot.domain.onboarding import CheckResult
from bot.engine.queue import Reply
from bot.runtime import execution, jobs
from bot.runtime.worker import Pool
from bot.settings import load_settings
from bot.telemetry import logs
from testkit.env import bot_env

TOKEN = "41eabcd0-1234-4c55-9e8a-1d2b3c4d5e6f"
REP = Requester(team_id="T0FAKE", user_id="U0REP", channel_id="C0SALES")


@pytest.fixture(autouse=True)
def _rq_levels_restored() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in logs.RQ_LOGGERS]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


class Stand:
    """What check_token's run touches of the core: the use case, metrics, delivery."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.onboarding = SimpleNamespace(check=lambda requester, token: CheckResult(
            token, "VALID", None))
        self.metrics = SimpleNamespace(command=lambda name, outcome: None)
        self.delivery = SimpleNamespace(reply=lambda url, message: self.sent.append(message))


def test_a_job_writes_one_info_line_of_its_own_and_rq_none(
        caplog: pytest.LogCaptureFixture) -> None:
    logs.quiet_libraries("INFO")  # as logs.configure does at LOG_LEVEL=INFO
    # RQ's own set-up, as its worker calls it with the level the pool hands on.
    setup_loghandlers(logs.library_level("INFO"), name="rq.worker")
    stand = Stand()
    execution.use_core(stand)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO)
    rq_log = logging.getLogger("rq.worker")
    try:
        rq_log.info("Worker w1: onboard-commands: check_token-1")  # RQ's "job started"
        jobs.check_token(Reply.to("https://hooks.slack.test/r"), REP, TOKEN)
        rq_log.info("Successfully completed check_token-1 job in 0:00:00.01s on worker w1")
    finally:
        execution.use_core(None)
    assert stand.sent  # the job ran and answered
    [line] = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert line.name == "bot.runtime.execution" and line.levelno == logging.INFO
    text = line.getMessage()
    assert text.startswith("check_token for U0REP: …5e6f is VALID (") and text.endswith(" s)")
    assert TOKEN not in text
    assert (line.user_id, line.command) == ("U0REP", "check_token")  # type: ignore[attr-defined]
    assert rq_log.handlers == []  # RQ added none: the root's writes its lines

    rq_log.warning("Worker w1: job check_token-2 failed")  # RQ's warnings still come through
    assert caplog.records[-1].name == "rq.worker"


def test_at_debug_rq_routine_lines_show() -> None:
    logs.quiet_libraries("DEBUG")
    setup_loghandlers(logs.library_level("DEBUG"), name="rq.worker")
    assert logging.getLogger("rq.worker").isEnabledFor(logging.INFO)
    assert logs.library_level("error") == "ERROR"


def test_rqs_own_set_up_in_the_pool_and_scheduler_keeps_rq_quiet() -> None:
    """RQ's WorkerPool constructor sets its logger to INFO, RQScheduler's to what it is
    given: the pool (and its scheduler) leave every RQ logger at the settings' level."""
    unconnected = redis.Redis()  # nothing here sends a command
    queue = Queue("onboard-commands", connection=unconnected)
    core = SimpleNamespace(commands=SimpleNamespace(queue=queue), queues=[queue],
                           reminders=SimpleNamespace(release_due=lambda: 0), digests=None)
    served = SimpleNamespace(url="http://127.0.0.1:9", api_url="http://127.0.0.1:9/api/")
    settings = load_settings(_env_file=None, **bot_env(served, served),
                             REDIS_URL="redis://127.0.0.1:9/0", LOG_LEVEL="INFO")
    logs.quiet_libraries(settings.log_level)
    Pool(settings, core)  # type: ignore[arg-type]
    assert not any(logging.getLogger(name).isEnabledFor(logging.INFO)
                   for name in logs.RQ_LOGGERS)
