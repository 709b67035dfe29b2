"""The bot's performance beside the targets of issue 10: `uv run python -m bench.run`.

Five parts, each on this machine, with the test suite's fakes (`bot.sandbox` for Exotel,
`testkit.slack` for Slack, served from this process at nice 19), real `python -m bot`
processes and throwaway `redis-server`s:

1. Ack latency: signed `/onboard-link 1` commands, 20 at a time, sustained, while the fake
   Exotel takes 1 s per call, against three apps served the same way (gunicorn, the bot's
   uvicorn worker class and ASGI wrapper, 1 worker x 32 threads): the bot's `web` process
   with its `worker` process running; a Bolt app that only acks (`bench/bare_app.py`); and an
   idiomatic Bolt app that makes the Exotel call in a `lazy` listener (`bench/lazy_app.py`).
   Many short rounds, the three apps taking turns, every ack pooled.
2. Command to links delivered (the response-URL reply reaching the fake Slack), Exotel 1 s:
   one link, 20 commands one every 0.5 s; and 50 links in one command, five times.
3. Backlog: 8 users ask for 50 links each at once with Exotel's real budget (200 a minute)
   and Exotel at 0.3 s: all delivered, how close to the budget, never over it.
4. Memory: the proportional set size of the whole `python -m bot` process tree (embedded
   Redis), idle after 100 commands.
5. Reminder lateness: 10,000 RQ jobs due over 60 s run by two `rq worker --with-scheduler`
   processes; for context, the same 10,000 due within 10 s.

Prints each figure beside its target (PASS/MISS), then writes `bench/RESULTS.md`. Takes
about five minutes on a 2-core machine. Redis bytes per batch: `python -m bench.redis_bytes`.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

from bench import ack, backlog, delivery, memory, reminders
from bench.harness import (
    RESULTS,
    TRACEBACKS,
    UNLIMITED,
    LoadSampler,
    Section,
    announce,
    bot_processes,
    fresh_redis,
    print_table,
    report,
    start_as_remote,
)
from bot.exotel.sandbox import ExotelSandbox
from testkit.env import EXOTEL_KEY, EXOTEL_SID, EXOTEL_TOKEN, ROOT
from testkit.slack import FakeSlack

PARTS = ("ack", "delivery", "backlog", "memory", "reminders")


def run(parts: tuple[str, ...], reminder_count: int) -> list[Section]:
    exotel = ExotelSandbox(EXOTEL_KEY, EXOTEL_TOKEN, EXOTEL_SID)
    slack = FakeSlack()
    start_as_remote(exotel, slack)
    sections: list[Section] = []
    try:
        if "ack" in parts or "delivery" in parts:
            with fresh_redis() as url, bot_processes(exotel, slack, url, **UNLIMITED) as bot:
                if "ack" in parts:
                    announce(f"1. Ack latency, {ack.ROUNDS} rounds of the bot, bare and lazy "
                             "apps")
                    sections.append(ack.run(exotel, slack, bot))
                if "delivery" in parts:
                    announce("2. Command to links delivered")
                    sections.append(delivery.run(exotel, slack, bot))
                if bot.tracebacks:
                    sections[-1].notes.append(TRACEBACKS)
        if "backlog" in parts:
            announce("3. Backlog at Exotel's budget (about 70 s)")
            sections.append(backlog.run(exotel, slack))
        if "memory" in parts:
            announce("4. Memory of `python -m bot`")
            sections.append(memory.run(exotel, slack))
        if "reminders" in parts:
            sections.append(reminders.run(exotel, slack, reminder_count))
    finally:
        slack.stop()
        exotel.stop()
    return sections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)} (default: all; "
                        "RESULTS.md is written only when all run)")
    parser.add_argument("--reminders", type=int, default=reminders.REMINDERS,
                        help="reminders to schedule in each scenario "
                        f"(default {reminders.REMINDERS:,})")
    args = parser.parse_args(argv)
    parts = tuple(p for p in args.parts.split(",") if p)
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    started_at = datetime.now(UTC)
    sampler = LoadSampler()
    clock = time.monotonic()
    sections = run(parts, args.reminders)
    seconds = time.monotonic() - clock
    loads = sampler.stop()
    print_table(sections)
    print(f"\nThe run took {seconds:.0f} s; load average {loads}.")
    if set(parts) == set(PARTS):
        RESULTS.write_text(report(sections, started_at, seconds, loads))
        print(f"Written to {RESULTS.relative_to(ROOT)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
