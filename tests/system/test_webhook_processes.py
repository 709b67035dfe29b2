"""Issue 25: a webhook event waiting for its retry when the whole bot is SIGKILLed is
delivered by the bot started again, with the same webhook-id."""

from __future__ import annotations

import os
import signal

import pytest
import redis
import requests
from rq.registry import ScheduledJobRegistry

from bot.engine.registry import WEBHOOKS_QUEUE
from bot.exotel.sandbox import ExotelSandbox
from testkit.env import bot_env
from testkit.processes import BotProcess
from testkit.receiver import SECRET, Receiver
from testkit.signed import command_body, sign
from testkit.slack import FakeSlack
from testkit.wait import wait_until

pytestmark = pytest.mark.slow


def test_an_event_pending_when_the_bot_is_killed_is_delivered_after_restart(
    redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    receiver = Receiver().start()
    receiver.status = 500  # down: every attempt fails, and is retried on the schedule
    env = bot_env(exotel, slack, REDIS_URL=redis_url, WEBHOOK_URLS=receiver.url,
                  WEBHOOK_SECRET=SECRET, WEBHOOK_RETRY_SCHEDULE="3s,3s,3s,3s,3s,3s")
    retries = ScheduledJobRegistry(WEBHOOKS_QUEUE, connection=redis_client)
    bots = [BotProcess(env, new_session=True).start(timeout=60)]
    try:
        body = command_body("/onboard-link", "1 Hook Kill", slack.response_url("kill"))
        assert requests.post(f"{bots[0].url}/slack/events", data=body.encode(),
                             headers=sign(body), timeout=5).status_code == 200
        wait_until(lambda: receiver.deliveries and retries.count, 30,
                   "a first attempt refused, its retry waiting")
        assert bots[0].proc is not None
        os.killpg(bots[0].proc.pid, signal.SIGKILL)  # web, pool, workers: the whole host
        bots[0].proc.wait(10)
        receiver.status = 200  # the receiver is back
        refused = len(receiver.deliveries)
        bots.append(BotProcess(env, new_session=True).start(timeout=60))
        wait_until(lambda: len(receiver.deliveries) > refused, 60,
                   "the pending event delivered by the bot started again")
    finally:
        for bot in bots:
            bot.stop()
        receiver.stop()
    events = [delivery.verified() for delivery in receiver.deliveries]
    assert {event["type"] for event in events} == {"link.issued"}
    assert len({delivery.id for delivery in receiver.deliveries}) == 1  # one event, retried
    assert events[-1]["data"]["customer_note"] == "Hook Kill"
