"""1. Ack latency: the bot's `web` process (its `worker` running) beside a Bolt app that only
acks and one that makes the Exotel call in a `lazy` listener, all served alike, under
sustained signed commands while the fake Exotel takes 1 s a call."""

from __future__ import annotations

import os
from dataclasses import dataclass

import redis
from rq import Queue
from rq.registry import StartedJobRegistry

from bench.harness import (
    CONCURRENCY,
    SLOW_EXOTEL,
    Bot,
    Figure,
    Section,
    ms,
    served,
    stat_fields,
    timed_commands_elsewhere,
)
from bench.load import percentile
from bot.engine.registry import COMMANDS_QUEUE
from bot.exotel.sandbox import ExotelSandbox, Fault
from testkit.processes import descendants_of
from testkit.slack import FakeSlack
from testkit.wait import wait_until

COMMANDS = 150
WARM_UP = 100
# Rounds of COMMANDS each, the three apps in turn (the order rotating); the figures pool every
# round's acks, so p99 rests on the ROUNDS * COMMANDS / 100 slowest. Short rounds, many of
# them: this machine's speed drifts over seconds, and the more often the apps take turns, the
# less of that drift one gets and the others don't.
ROUNDS = 16
ACK_RATIO_TARGET = 1.5
APPS = ("bot", "bare", "lazy")

LOAD_TEXT = "1 load test"
STEADY_RATE = 20.0
STEADY_ROUNDS = 3
STEADY_COMMANDS = 100


def cpu_seconds(root: int) -> float:
    """CPU time used so far by `root` and its descendants (user and system)."""
    total = 0
    for pid in {root, *descendants_of(root)}:
        try:
            fields = stat_fields(pid)
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def idle_queues(bot: Bot, timeout: float = 30) -> int:
    """Drop the commands still queued and wait for those in hand: how many were dropped.

    Under a sustained 20 at a time the bot acks hundreds a second and its workers, at one
    Exotel second each, do four; without this the backlog would grow round after round."""
    connection = redis.Redis.from_url(bot.redis_url)
    queue = Queue(COMMANDS_QUEUE, connection=connection)
    dropped = queue.count
    queue.empty()
    started = StartedJobRegistry(COMMANDS_QUEUE, connection=connection)
    wait_until(lambda: not started.count, timeout, "the commands in hand done", every=0.05,
               fail=False)
    return dropped


@dataclass
class Load:
    latencies: list[float]
    windows: list[tuple[float, float]]  # (began, ended) of each run, while acks were timed
    dropped: int = 0  # the bot's commands left queued after the run, dropped (idle_queues)
    cpu: float = 0.0  # CPU seconds the app's web processes used during the run

    @property
    def wall(self) -> float:
        """Seconds the client spent sending, summed over the runs."""
        return sum(ended - began for began, ended in self.windows)

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.5)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall


def load(url: str, slack: FakeSlack, name: str, count: int = COMMANDS,
         pid: int | None = None, rate: float | None = None) -> Load:
    """`count` timed commands, CONCURRENCY at a time, as fast as the app acks them (or at a
    steady `rate` a second); with `pid`, the CPU time its process tree used meanwhile."""
    cpu = cpu_seconds(pid) if pid else 0.0
    window, latencies = timed_commands_elsewhere(url, slack.response_url(name), count,
                                                 CONCURRENCY, LOAD_TEXT, rate)
    return Load(latencies, [window], cpu=cpu_seconds(pid) - cpu if pid else 0.0)


def pooled(loads: list[Load]) -> Load:
    """Every round's acks as one sample, over the rounds' summed wall time."""
    return Load(sorted(t for load in loads for t in load.latencies),
                [window for load in loads for window in load.windows],
                dropped=sum(load.dropped for load in loads),
                cpu=sum(load.cpu for load in loads))


def begun_during(load: Load, calls: list[float]) -> int:
    """How many of the Exotel calls begun at `calls` fell while `load`'s acks were timed."""
    return sum(1 for at in calls if any(began <= at <= ended for began, ended in load.windows))


def in_turn(n: int) -> tuple[str, ...]:
    """The apps in round `n`'s order: each first, second, third in turn."""
    return APPS[n % 3:] + APPS[:n % 3]


def run(exotel: ExotelSandbox, slack: FakeSlack, bot: Bot) -> Section:
    with served("bare", exotel, slack) as bare, served("lazy", exotel, slack) as lazy:
        urls = {"bot": bot.url, "bare": bare.url, "lazy": lazy.url}
        assert bot.web.proc is not None
        pids = {"bot": bot.web.proc.pid, "bare": bare.pid, "lazy": lazy.pid}
        exotel.always = Fault(passthrough=True, delay=SLOW_EXOTEL)
        for app, url in urls.items():
            load(url, slack, f"{app}-warm", count=WARM_UP)
        idle_queues(bot)
        rounds: dict[str, list[Load]] = {app: [] for app in APPS}
        for n in range(ROUNDS):
            for app in in_turn(n):
                result = load(urls[app], slack, f"{app}-{n}", pid=pids[app])
                if app == "bot":
                    result.dropped = idle_queues(bot)
                rounds[app].append(result)
        calls = [call.at for call in exotel.calls_of("POST")]
        steady: dict[str, list[Load]] = {app: [] for app in APPS}
        for n in range(STEADY_ROUNDS):
            for app in in_turn(n):
                steady[app].append(load(urls[app], slack, f"{app}-steady-{n}",
                                        count=STEADY_COMMANDS, rate=STEADY_RATE))
                if app == "bot":
                    idle_queues(bot)
        exotel.always = None
    # The lazy app's own backlog died with it; the bot's in hand ends here.
    dropped = idle_queues(bot)
    section = ack_section({app: pooled(loads) for app, loads in rounds.items()}, calls, dropped)
    calm = {app: pooled(loads) for app, loads in steady.items()}
    section.figures.append(Figure(
        f"for context, ack p99 at a steady {STEADY_RATE:.0f} commands/s, bot / bare / lazy",
        " / ".join(ms(calm[app].p99) for app in APPS)
        + f" ({calm['bot'].p99 / calm['bare'].p99:.2f}× bare)"))
    section.notes.append(
        f"The steady rounds: {STEADY_ROUNDS} × {STEADY_COMMANDS} commands per app sent at "
        f"{STEADY_RATE:.0f} a second (six times what Exotel's 200 requests a minute per account "
        "could serve), the load the product meets; the saturating rounds above are about 150 "
        "times that.")
    return section


def ack_section(apps: dict[str, Load], calls: list[float], dropped_at_end: int) -> Section:
    bot, bare, lazy = apps["bot"], apps["bare"], apps["lazy"]
    ratio = bot.p99 / bare.p99
    figures = [
        Figure("ack p50 / p99, bot (`web`, with `worker` running)",
               f"{ms(bot.p50)} / {ms(bot.p99)}"),
        Figure("ack p50 / p99, bare Bolt app (acks only)", f"{ms(bare.p50)} / {ms(bare.p99)}"),
        Figure("ack p50 / p99, Bolt app with a `lazy` Exotel call",
               f"{ms(lazy.p50)} / {ms(lazy.p99)}"),
        Figure("ack p99, bot ÷ bare", f"{ratio:.2f}×", f"≤ {ACK_RATIO_TARGET}×",
               ratio <= ACK_RATIO_TARGET),
        Figure("ack p99, bot vs lazy", f"{ms(bot.p99)} vs {ms(lazy.p99)}",
               "bot ≤ lazy", bot.p99 <= lazy.p99),
        Figure("commands/s, bot / bare / lazy",
               f"{bot.rate:.0f} / {bare.rate:.0f} / {lazy.rate:.0f}"),
        Figure("web processes' CPU per command, bot / bare / lazy", " / ".join(
            f"{1000 * a.cpu / len(a.latencies):.2f} ms" for a in (bot, bare, lazy))),
    ]
    total = len(bot.latencies)
    notes = [
        f"{ROUNDS} rounds of {COMMANDS} signed `/onboard-link {LOAD_TEXT}` commands per app, "
        f"{CONCURRENCY} at a time over keep-alive connections, from a client process of its "
        "own (`timed_commands`), the three apps in turn and the order rotating each round, "
        f"after a warm-up of {WARM_UP} each; every ack pooled ({total:,} per app: p99 is the "
        f"{total - percentile(list(range(total)), 0.99)}th slowest). Fake Exotel answering "
        f"in {SLOW_EXOTEL:.0f} s; commands/s is the count over the client's wall time.",
        "All three served by gunicorn with `bot.server.Worker` (uvicorn, httptools), "
        "`WholeBody(ThreadedWSGI(app, 32))`, 1 worker (`gunicorn_options`, the default "
        "WEB_CONCURRENCY); the bare and lazy apps through `python -m bench.serve bare|lazy`.",
        "The bot's `worker` process (4 RQ workers) makes the Exotel calls, 4 at a time, at "
        "1 s each: it cannot keep up with hundreds of commands a second, so after each bot "
        "round the commands still queued are dropped and those in hand waited for "
        f"({bot.dropped:,} of {total:,} dropped in all, {dropped_at_end} more at the end). "
        "The lazy app's work runs on Bolt's listener pool (5 threads per web worker), in the "
        "web process; its backlog is left to run on through the later rounds, as it would.",
        "Exotel calls begun while a round's acks were being timed: bot "
        f"{begun_during(bot, calls):,}, lazy {begun_during(lazy, calls):,}, bare "
        f"{begun_during(bare, calls):,} (the others' leftover work).",
        "CPU per command: user and system time of the app's gunicorn master and workers "
        "over its rounds, divided by its commands (the lazy app's includes the Exotel calls "
        "and replies its listener threads made meanwhile; the bot's worker process is not "
        "counted). At 20 in flight as fast as each app acks, all three saturate this "
        "machine's 2 cores (shared with the client, Redis and the fakes), so ack latency "
        "follows CPU per command. The bot's ack enqueues its job before acking: RQ's "
        "`Queue.enqueue`, two MULTI/EXEC transactions and 11 Redis commands per command, "
        "about two thirds of the bot's ack time in a profile of its WSGI app.",
    ]
    return Section("1. Ack latency, 20 concurrent commands sustained, Exotel 1 s", figures,
                   notes)
