"""Redis bytes per batch of 1 link over its whole life: `uv run python -m bench.redis_bytes`.

On a fresh redis-server (the tests' binary), with the suite's fake Exotel and Slack:

1. a warm-up of 20 batches, issued and reminded, so that one-off structures exist (RQ's
   queue set, the audit stream); then the baseline;
2. N batches of 1 link issued through `build_core(...).onboarding.issue` ("live": links,
   batch, indexes, the scheduled reminder's entry in `onboard:reminder:due`);
3. their reminders released by the scheduler and run by RQ workers, in burst mode
   (`bot.runtime.worker.drain`: "reminded");
4. 48 h after issue. Redis' clock cannot be moved, so this is read off the TTLs: a key is
   still there 48 h after the first issue if it has no TTL or one reaching past that moment.

Each point: the sum of `MEMORY USAGE` over every key (the data, exact and repeatable) and
`used_memory` (all of Redis, after closing the bot's connections and flushing the Lua script
cache), less the baseline, per batch. The audit trail and the per-link history
(`onboard:history:*`, for `/onboard-link report`) are reported apart: they are kept for
AUDIT_RETENTION_DAYS (90 by default) on purpose, trimmed to that as they are written.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from datetime import timedelta

import redis

from bot.domain.audit import STREAM
from bot.domain.models import Requester
from bot.exotel.sandbox import ExotelSandbox
from bot.runtime import execution, worker
from bot.runtime.composition import build_core
from bot.settings import load_settings
from bot.slack.core import Core
from testkit.env import EXOTEL_KEY, EXOTEL_SID, EXOTEL_TOKEN, bot_env
from testkit.processes import RedisProcess
from testkit.slack import FakeSlack

HORIZON = timedelta(hours=48)
REP = Requester(team_id="T0BENCH", user_id="U0BENCH", channel_id="C0BENCH")


KEPT_FOR_RETENTION = (STREAM, "onboard:history")  # key classes: the audit, the history


def key_class(key: str) -> str:
    parts = key.split(":")
    return ":".join(parts[:3] if parts[0] == "onboard" and parts[1] == "reminder" else parts[:2])


def snapshot(client: redis.Redis, cores: list[Core], horizon_ms: float | None = None
             ) -> dict[str, int]:
    """Bytes by key class (MEMORY USAGE), with `used_memory`; with `horizon_ms`, only the
    keys that will still exist at that moment (unix ms)."""
    for core in cores:  # their buffers are no data of a batch
        core.store.redis.connection_pool.disconnect()
        core.reminders.queue.connection.connection_pool.disconnect()
    client.script_flush()
    now_ms = time.time() * 1000
    sizes: dict[str, int] = defaultdict(int)
    for key in client.scan_iter(count=1000):
        if horizon_ms is not None:
            pttl = client.pttl(key)
            if pttl == -2 or (pttl >= 0 and now_ms + pttl <= horizon_ms):
                continue
        sizes[key_class(key)] += client.memory_usage(key, samples=0) or 0
    sizes["used_memory"] = int(client.info("memory")["used_memory"])
    return sizes


def issue(core: Core, count: int) -> None:
    for n in range(count):
        result = core.onboarding.issue(REP, 1, f"bench {n}")
        assert result.batch is not None


def run(batches: int) -> None:
    server = RedisProcess().start()
    exotel = ExotelSandbox(EXOTEL_KEY, EXOTEL_TOKEN, EXOTEL_SID).start()
    slack = FakeSlack().start()
    try:
        settings = load_settings(_env_file=None, **bot_env(
            exotel, slack, REDIS_URL=server.url, REMINDER_LEAD="86399",  # due 1 s after issue
            EXOTEL_RATE_PER_MINUTE="100000", MAX_LINKS_PER_USER_PER_DAY="1000000"))
        core = build_core(settings)
        execution.use_core(core)
        client = redis.Redis.from_url(server.url, decode_responses=True)

        issue(core, 20)
        time.sleep(1.5)
        worker.drain(core)
        base = snapshot(client, [core])
        started_ms = time.time() * 1000
        horizon = started_ms + HORIZON.total_seconds() * 1000
        base_48h = snapshot(client, [core], horizon)  # the baseline's own share of that time
        issue(core, batches)
        live = snapshot(client, [core])
        time.sleep(1.5)
        worker.drain(core)
        posted = len(slack.calls("chat.postMessage"))
        reminded = snapshot(client, [core])
        at_48h = snapshot(client, [core], horizon)
        report(batches, posted, base, live, reminded, base_48h, at_48h, client)
    finally:
        slack.stop()
        exotel.stop()
        server.stop()


def report(batches: int, posted: int, base: dict[str, int], live: dict[str, int],
           reminded: dict[str, int], base_48h: dict[str, int], at_48h: dict[str, int],
           client: redis.Redis) -> None:
    def per_batch(point: dict[str, int], reference: dict[str, int], audit: bool) -> float:
        keys = [k for k in point.keys() | reference.keys() if k != "used_memory"]
        keys = [k for k in keys if audit or k not in KEPT_FOR_RETENTION]
        return sum(point.get(k, 0) - reference.get(k, 0) for k in keys) / batches

    print(f"{batches} batches of 1 link; {posted} reminders posted (20 of them the warm-up's)")
    print(f"Redis {client.info('server')['redis_version']}")
    print("| point | data per batch, without / with the audit trail and link history | "
          "used_memory per batch |")
    print("|---|---|---|")
    for name, point in (("live (reminder scheduled)", live), ("reminded", reminded)):
        memory = (point["used_memory"] - base["used_memory"]) / batches
        print(f"| {name} | {per_batch(point, base, False):.0f} B / "
              f"{per_batch(point, base, True):.0f} B | {memory:.0f} B |")
    # Still there 48 h after the first issue, against what of the baseline would be.
    print(f"| 48 h after issue (TTLs) | {per_batch(at_48h, base_48h, False):.0f} B / "
          f"{per_batch(at_48h, base_48h, True):.0f} B | |")
    print()
    print("Data per batch by key class (MEMORY USAGE, less the baseline):")
    for name, point in (("live", live), ("reminded", reminded), ("48 h", at_48h)):
        reference = base_48h if name == "48 h" else base
        classes = sorted((k for k in point if k != "used_memory"),
                         key=lambda k: -(point[k] - reference.get(k, 0)))
        shown = [f"{k} {(point[k] - reference.get(k, 0)) / batches:.0f} B" for k in classes
                 if point[k] != reference.get(k, 0)]
        print(f"- {name}: {', '.join(shown) or 'nothing'}")
    print(f"- 48 h, keys left: {sorted(k for k in at_48h if k != 'used_memory')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=1000)
    run(parser.parse_args().batches)


if __name__ == "__main__":
    main()
