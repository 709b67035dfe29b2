"""/metrics: Prometheus text, this process's counters moving as the bot works, and the job
queues read from Redis. (Counts are per process, so these tests compare before and after.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue

from bot.telemetry import metrics
from testkit.processes import free_port
from tests.blockkit import block_text
from tests.support import METRICS_TOKEN, Bot, scrape_metrics


@pytest.fixture
def bot(make_bot: Callable[..., Bot]) -> Bot:
    return make_bot(METRICS_TOKEN=METRICS_TOKEN)


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: value - before.get(name, 0.0) for name, value in after.items()
            if value != before.get(name, 0.0)}


def test_counters_move_after_a_command(bot: Bot) -> None:
    before = scrape_metrics(bot.url)
    assert "2 WhatsApp" in block_text(bot.command("/onboard-link", "2 ACME").final())
    after = scrape_metrics(bot.url)
    delta = moved(before, after)
    assert delta["onboard_links_issued_total"] == 2
    assert delta['onboard_slack_requests_total{kind="/onboard-link"}'] == 1
    assert delta['onboard_commands_total{command="issue_links",outcome="ok"}'] == 1
    assert delta['onboard_exotel_request_seconds_count{method="POST",outcome="200"}'] == 2
    assert delta['onboard_exotel_request_seconds_bucket{le="+Inf",method="POST",outcome="200"}'] \
        == 2
    # Read from Redis at the scrape: the batch's reminder waits in the reminders queue.
    assert after['onboard_queue_jobs{queue="onboard-reminders",state="scheduled"}'] == 1
    assert after["onboard_redis_up"] == 1


def test_a_redis_that_does_not_answer_shows_as_down_beside_the_counts() -> None:
    # No retries: redis-py's default backs off three times (seconds of a refused port).
    nowhere = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    text = metrics.render(metrics.QueueCollector([Queue("q", connection=nowhere)])).decode()
    assert "onboard_redis_up 0.0" in text
    assert "onboard_queue_jobs" not in text
    assert "# TYPE onboard_links_issued_total counter" in text


def test_metrics_need_the_bearer_token(bot: Bot) -> None:
    url = f"{bot.url}/metrics"
    assert requests.get(url, timeout=5).status_code == 401
    for wrong in (f"Bearer {METRICS_TOKEN}x", f"Bearer {METRICS_TOKEN[:-1]}", METRICS_TOKEN,
                  f"Basic {METRICS_TOKEN}", "Bearer "):
        response = requests.get(url, headers={"Authorization": wrong}, timeout=5)
        assert response.status_code == 401, wrong
        assert "onboard_" not in response.text
    assert "onboard_links_issued_total" in requests.get(
        url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5).text


def test_no_metrics_token_no_metrics(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot()
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
        assert requests.get(f"{bot.url}/metrics", headers=headers, timeout=5).status_code == 404


def test_the_metrics_token_is_a_secret(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(METRICS_TOKEN=METRICS_TOKEN)
    assert METRICS_TOKEN in bot.core.settings.secrets()
