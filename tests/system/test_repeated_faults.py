"""An operator's bad day: processes killed over and over, Redis restarted, under steady load.

Four `/onboard-link 1` a second for 30 s against real `python -m bot web` and `worker`
processes, while web and worker are SIGKILLed in turn (each kill right after an ack), or
while Redis (append-only) is stopped twice for 3 s. Every acknowledged command must end in
its link or in an account of what happened, and every link Exotel made must be tracked and
shown to exactly one command.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import requests

from bot.domain.store import TOKEN_KEY
from bot.exotel.sandbox import ExotelSandbox, Fault
from testkit.env import bot_env
from testkit.processes import BotProcess, RedisProcess, free_port, kill_tree
from testkit.signed import command_body, sign
from testkit.slack import FakeSlack
from testkit.wait import wait_until
from tests.blockkit import block_text

pytestmark = pytest.mark.slow

RATE = 4  # commands a second
LOAD_SECONDS = 30
TOKEN = re.compile(r"isv-onboard/([0-9a-f-]{36})")
# What an acknowledged command may end in: its link, or an account of why not.
LINKS = "1 WhatsApp onboarding link"
ACCOUNTS = ("interrupted", "is not answering", "not tracked")


@dataclass
class Load:
    """`RATE` commands a second at whatever web process listens on `port`."""

    port: int
    slack: FakeSlack
    sent: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # acks that said Redis was down
    ack: threading.Condition = field(default_factory=threading.Condition)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        sent = 0
        start = time.monotonic()
        while not self.stop.is_set() and time.monotonic() - start < LOAD_SECONDS:
            self.sent.append(f"load{sent}")
            threading.Thread(target=self.send, args=(f"load{sent}",), daemon=True).start()
            sent += 1
            time.sleep(max(0.0, start + sent / RATE - time.monotonic()))

    def send(self, name: str) -> None:
        body = command_body("/onboard-link", f"1 Customer {name}", self.slack.response_url(name),
                            user_id=f"U0{name.upper()}")
        try:
            answer = requests.post(f"http://127.0.0.1:{self.port}/slack/events",
                                   data=body.encode(), headers=sign(body), timeout=5)
        except requests.RequestException:
            return  # no web process listening: Slack would show its own error, nothing acked
        if answer.status_code != 200:
            return
        text = block_text(answer.json())
        with self.ack:
            if "Creating 1 onboarding link" in text:
                self.acked.append(name)
                self.ack.notify_all()
            elif "is not answering" in text:
                self.refused.append(name)

    def next_ack(self) -> None:
        """Return right after the next command is acknowledged."""
        with self.ack:
            seen = len(self.acked)
            self.ack.wait_for(lambda: len(self.acked) > seen or self.stop.is_set(), timeout=10)


def exotel_quiet(exotel: ExotelSandbox) -> bool:
    """No answer of Exotel's on its way to a worker: a link whose answer a worker never
    read can be tracked by nobody, so a kill waits for a quiet moment (some milliseconds)."""
    return exotel.answering == 0 and time.monotonic() - exotel.answered_at > 0.1


def outcomes(load: Load, slack: FakeSlack, timeout: float) -> dict[str, str]:
    """Each acknowledged command's last reply, once every one has one."""
    for name in load.acked:
        slack.wait_for_replies(name, timeout=timeout)
    return {name: block_text(slack.replies(name)[-1]) for name in load.acked}


def check_every_link_accounted(exotel: ExotelSandbox, slack: FakeSlack, load: Load,
                               redis_url: str,
                               kills: Sequence[tuple[datetime, datetime]] = ()
                               ) -> dict[str, str]:
    ends = outcomes(load, slack, timeout=120)
    unaccounted = {name: text for name, text in ends.items()
                   if LINKS not in text and not any(a in text for a in ACCOUNTS)}
    assert not unaccounted, unaccounted
    shown: dict[str, set[str]] = defaultdict(set)  # token -> the commands it was shown to
    # Every command sent: one whose web process died as it acked is still done, and answered.
    for name in load.sent:
        for reply in slack.replies(name):
            for token in TOKEN.findall(str(reply)):
                shown[token].add(name)
    assert all(len(names) == 1 for names in shown.values()), shown  # none to two commands
    made = set(exotel.tokens)
    client = redis.Redis.from_url(redis_url)
    # A link whose answer was still on its way to a worker at the instant it was killed is
    # known to nobody but Exotel (which offers no list): the one loss no design can avoid.
    in_flight = {token for token in made - set(shown)
                 if any(start <= exotel.tokens[token].issued_at <= end for start, end in kills)}
    assert len(in_flight) <= len(kills), in_flight
    print(f"links made: {len(made)}; in flight at a kill: {len(in_flight)}")
    assert made - in_flight == set(shown), (made - in_flight - set(shown), set(shown) - made)
    tracked = {token for token in made - in_flight if client.exists(TOKEN_KEY.format(token))}
    untracked = made - in_flight - tracked
    for token in untracked:  # shown, and with the warning that it is not tracked
        (name,) = shown[token]
        assert "not tracked" in block_text(slack.replies(name)[-1]), name
    return ends


def env(exotel: ExotelSandbox, slack: FakeSlack, redis_url: str) -> dict[str, Any]:
    return bot_env(exotel, slack, REDIS_URL=redis_url, EXOTEL_DEADLINE="5",
                   EXOTEL_TIMEOUT="5", EXOTEL_RATE_PER_MINUTE="1000")


# The load's 30 s, the kills' restarts, then up to 120 s for the last outcomes: a job whose
# worker was killed after it started is failed over only once its heartbeat lapses
# (EXOTEL_DEADLINE + RECORD_MARGIN + 25 + JOB_MARGIN = 55 s here) and a maintenance pass
# finds it. The suite's default of 120 s for the whole test was shorter than its own wait.
@pytest.mark.timeout(240)
def test_rolling_kills_of_web_and_worker_lose_no_acknowledged_command(
    redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    port = free_port()
    settings = env(exotel, slack, redis_url)
    web = BotProcess({**settings, "PORT": str(port)}, "web").start()
    worker = BotProcess(settings, "worker").start()
    load = Load(port, slack)
    runner = threading.Thread(target=load.run)
    runner.start()
    kills = {"web": 0, "worker": 0}
    worker_kills: list[tuple[datetime, datetime]] = []  # when each worker kill began, ended
    try:
        while runner.is_alive():
            time.sleep(6)
            load.next_ack()
            if kills["web"] <= kills["worker"]:
                kill_tree(web)  # right after an ack: its job is in Redis, nothing more
                kills["web"] += 1
                web = BotProcess({**settings, "PORT": str(port)}, "web").start()
            else:
                began = datetime.now(UTC)
                wait_until(lambda: exotel_quiet(exotel), 5, "a quiet moment at Exotel",
                           every=0.002)
                kill_tree(worker)  # right after an ack: a worker is taking its job
                worker_kills.append((began, datetime.now(UTC)))
                kills["worker"] += 1
                worker = BotProcess(settings, "worker").start()
        runner.join()
        ends = check_every_link_accounted(exotel, slack, load, redis_url, worker_kills)
    finally:
        load.stop.set()
        runner.join()
        web.stop()
        worker.stop()
    assert kills["web"] >= 2 and kills["worker"] >= 2, kills
    assert len(load.acked) >= 60, len(load.acked)
    assert sum(LINKS in text for text in ends.values()) >= len(ends) // 2  # mostly served


def test_redis_stopped_twice_under_load_withholds_no_link(
    exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    own = RedisProcess(options={"appendonly": "yes", "appendfsync": "everysec"}).start()
    # Exotel answers half a second after each request: Redis stops while links are being
    # made, between the checks before the call and the recording after it.
    exotel.always = Fault(passthrough=True, delay=0.5)
    port = free_port()
    settings = env(exotel, slack, own.url)
    web = BotProcess({**settings, "PORT": str(port)}, "web").start()
    worker = BotProcess(settings, "worker").start()
    load = Load(port, slack)
    runner = threading.Thread(target=load.run)
    runner.start()
    try:
        for _ in range(2):
            time.sleep(8)
            load.next_ack()
            wait_until(lambda: exotel.answering > 0, 5, "links being made")
            own.stop()  # SIGTERM: Redis writes its append-only file and exits
            time.sleep(3)
            own.start()
        runner.join()
        check_every_link_accounted(exotel, slack, load, own.url)
        # The links made as Redis stopped were recorded once it was back: the hard case ran.
        assert "without Redis" in worker.output(), "no link was made while Redis was down"
    finally:
        load.stop.set()
        runner.join()
        web.stop()
        worker.stop()
        own.stop()
    assert load.refused, "some acks came while Redis was down, and said so"
    assert len(load.acked) >= 60, len(load.acked)

