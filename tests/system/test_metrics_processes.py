"""Prometheus scrapes every process: summed, the targets count each command once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests

from bot.exotel.sandbox import ExotelSandbox
from testkit.env import bot_env
from testkit.processes import BotProcess, free_port
from testkit.signed import command_body, sign
from testkit.slack import FakeSlack
from testkit.wait import wait_until
from tests.support import METRICS_TOKEN, scrape_metrics

ISSUED = 'onboard_commands_total{command="issue_links",outcome="ok"}'
RECEIVED = 'onboard_slack_requests_total{kind="/onboard-link"}'


@pytest.fixture
def processes(redis_url: str, _exotel_server: ExotelSandbox, _slack_server: FakeSlack
              ) -> Iterator[tuple[BotProcess, BotProcess, str]]:
    """Two web processes (one with two gunicorn workers) and a worker pool of two, as an
    operator runs them on three hosts; the worker's metrics URL."""
    env = bot_env(_exotel_server, _slack_server, REDIS_URL=redis_url,
                  METRICS_TOKEN=METRICS_TOKEN)
    port = free_port()
    started = []
    try:
        for extra, kind in (({"WEB_CONCURRENCY": "2"}, "web"), ({}, "web"),
                            ({"WORKER_PROCESSES": "2", "WORKER_METRICS_PORT": str(port)},
                             "worker")):
            started.append(BotProcess({**env, **extra}, kind).start())
        yield started[0], started[1], f"http://127.0.0.1:{port}"
    finally:
        for process in started:
            process.stop()


def test_summed_scrapes_count_each_command_once(
    processes: tuple[BotProcess, BotProcess, str], slack: FakeSlack
) -> None:
    first, second, worker = processes
    webs = (first, second)
    for i, web in enumerate((first, first, first, second, second)):
        name = uuid.uuid4().hex
        body = command_body("/onboard-link", f"1 Metrics Co {i}", slack.response_url(name))
        assert requests.post(f"{web.url}/slack/events", data=body.encode(), headers=sign(body),
                             timeout=10).status_code == 200
        slack.wait_for_replies(name)  # the link, from the worker

    # Each web process counts only what it received, whichever of its forks took it, so
    # every scrape of the two-worker process says the same.
    assert {scrape_metrics(first.url).get(RECEIVED) for _ in range(6)} == {3}
    assert scrape_metrics(second.url).get(RECEIVED) == 2
    assert sum(scrape_metrics(web.url).get(RECEIVED, 0) for web in webs) == 5
    # The links were issued by the worker pool, which serves its own counts.
    wait_until(lambda: scrape_metrics(worker).get(ISSUED) == 5, 30, "the worker counted 5 commands")
    assert sum(scrape_metrics(url).get(ISSUED, 0) for url in (first.url, second.url, worker)) == 5
    pool = scrape_metrics(worker)
    assert pool["onboard_links_issued_total"] == 5
    assert pool['onboard_queue_jobs{queue="onboard-reminders",state="scheduled"}'] >= 5
    assert pool["onboard_workers"] >= 2


def test_the_worker_metrics_need_the_token(
    processes: tuple[BotProcess, BotProcess, str]
) -> None:
    *_, worker = processes
    assert requests.get(f"{worker}/metrics", timeout=10).status_code == 401
    wrong = {"Authorization": f"Bearer {METRICS_TOKEN}x"}
    assert requests.get(f"{worker}/metrics", headers=wrong, timeout=10).status_code == 401
