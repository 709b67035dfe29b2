"""What `python -m bot` writes at LOG_LEVEL=INFO when nothing happens: next to nothing; and
while Slack is unreachable at start: its own line per attempt, on the documented back-off."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from rq import Worker

from bot.engine.registry import SCHEDULER_LOCK
from bot.exotel.sandbox import ExotelSandbox
from bot.runtime import embedded_redis
from testkit.env import bot_env
from testkit.processes import BotProcess, free_port
from testkit.slack import FakeSlack
from testkit.wait import wait_until

IDLE_SECONDS = 120  # watched once start-up is complete
MOST_IDLE_LINES = 2
MOST_IDLE_AOF_BYTES = 10_000  # the embedded Redis's append-only file, over the two minutes
UNREACHABLE_SECONDS = 60  # Slack refuses connections this long from the first attempt
# README: "exponential backoff (0.5 s doubling, at most 30 s apart)".
FIRST_WAIT, LONGEST_WAIT = 0.5, 30.0
GAP_TOLERANCE = 0.3  # seconds; slack_sdk's own retries used to add about 1 s to each step


@pytest.mark.timeout(IDLE_SECONDS + 180)  # the two minutes watched, and the start and stop
def test_an_idle_bot_writes_at_most_two_lines_and_10_kb_to_redis_in_two_minutes(
    exotel: ExotelSandbox, slack: FakeSlack, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    # The default settings, status polls every 5 minutes: an idle round is a DEBUG line
    # and about 4.5 KB of an RQ job's writes to Redis.
    env = bot_env(exotel, slack, ONBOARD_DATA_DIR=str(data), LOG_LEVEL="INFO")
    bot = BotProcess(env)  # `python -m bot`: embedded Redis, web, the pool beside
    try:
        bot.start(timeout=60)
        wait_until(lambda: started_up(bot, data), 60, "the pool's workers and scheduler up")
        startup = bot.output().splitlines()
        settled = len(startup)
        aof_before = aof_bytes(data)

        def since() -> list[str]:
            return bot.output().splitlines()[settled:]

        # Watch the whole two minutes, unless too many lines come before.
        wait_until(lambda: len(since()) > MOST_IDLE_LINES, IDLE_SECONDS, "idle lines",
                   every=1, fail=False)
        idle = since()
        grown = aof_bytes(data) - aof_before
    finally:
        bot.stop()
    # Start-up says what it started, and warns of nothing (Bolt's unused-token notice was one).
    assert not [line for line in startup if " WARNING " in line or " ERROR " in line], startup
    assert len(idle) <= MOST_IDLE_LINES, "\n".join(idle)
    print(f"{len(idle)} lines and {grown} B of append-only file in the {IDLE_SECONDS} s "
          "after start-up")
    assert grown <= MOST_IDLE_AOF_BYTES, grown


def aof_bytes(data: Path) -> int:
    return (data / embedded_redis.AOF_NAME).stat().st_size


def started_up(bot: BotProcess, data: Path) -> bool:
    """Every worker of the pool registered, and its scheduler holds the locks (and said so)."""
    url = embedded_redis.running(data)
    if url is None:
        return False
    jobs = redis.Redis.from_url(url)
    return (len(Worker.all(connection=jobs)) == 6  # WORKER_PROCESSES + 2
            and jobs.get(SCHEDULER_LOCK) is not None
            and "this host now schedules" in bot.output())


def test_while_slack_is_unreachable_each_attempt_is_one_line_of_the_bots_own(
    redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox
) -> None:
    port = free_port()  # nothing listens there until the stand-in starts
    api_url = f"http://127.0.0.1:{port}/api/"
    env = bot_env(exotel, SimpleNamespace(api_url=api_url),  # type: ignore[arg-type]
                  REDIS_URL=redis_url, LOG_LEVEL="INFO")
    bot = BotProcess(env)
    said = f"WARNING bot.runtime.startup: Slack's API is not reachable at {api_url} ("
    stand_ins: list[FakeSlack] = []
    try:
        bot.start(timeout=60, ready=lambda: said in bot.output())
        first = moment(next(line for line in bot.output().splitlines() if said in line))
        wait_until(lambda: (datetime.now() - first).total_seconds() >= UNREACHABLE_SECONDS,
                   UNREACHABLE_SECONDS + 10, "Slack unreachable for a minute", every=0.5)
        stand_ins.append(FakeSlack(port).start())  # listens from the moment it is made
        wait_until(bot._healthy, LONGEST_WAIT + 30, "the bot serves once Slack is back")
    finally:
        bot.stop()
        for stand_in in stand_ins:
            stand_in.stop()
    lines = bot.output().splitlines()
    back = next(i for i, line in enumerate(lines) if "Slack's API is reachable again" in line)
    waiting = lines[:back]
    assert waiting and all(said in line for line in waiting), "\n".join(waiting)
    assert f"after {len(waiting)} failed attempts" in lines[back]
    schedule = [min(FIRST_WAIT * 2 ** attempt, LONGEST_WAIT) for attempt in range(len(waiting))]
    assert [float(line.rsplit("retrying in ", 1)[1].removesuffix(" s")) for line in waiting] \
        == schedule
    stamps = [moment(line) for line in lines[:back + 1]]
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(stamps)]
    assert all(abs(gap - wait) <= GAP_TOLERANCE
               for gap, wait in zip(gaps, schedule, strict=True)), gaps
    print(f"{len(waiting)} lines while waiting; gaps {[round(gap, 2) for gap in gaps]} s")


def moment(line: str) -> datetime:
    """When a line of the bot's text log was written (its asctime, local time)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
