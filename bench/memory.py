"""4. Memory of the whole bot: the proportional set size of the `python -m bot` process tree
(web, workers and embedded Redis), and of the Procfile's `web` and `worker` at their defaults,
each idle after 100 commands; for context, the first with one process fewer on either side."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    CONCURRENCY,
    UNLIMITED,
    WEB,
    Figure,
    Section,
    bot_processes,
    fresh_redis,
    links_in,
    stat_fields,
    timed_commands_elsewhere,
)
from bot.exotel.sandbox import ExotelSandbox
from testkit.env import bot_env
from testkit.processes import BotProcess, descendants_of
from testkit.slack import FakeSlack

MEMORY_COMMANDS = 100
MEMORY_TARGET_MB = 150  # `python -m bot`
PROCFILE_TARGET_MB = 200  # the Procfile's web + worker
STOP_TARGET_SECONDS = 3.0
IDLE_SECONDS = 5.0
# For context: the same with one process fewer on either side, to show what each costs.
MEMORY_VARIANTS = ({"WEB_CONCURRENCY": "2"}, {"WORKER_PROCESSES": "3"})


@dataclass
class ProcessMemory:
    pid: int
    role: str
    pss_kb: int
    rss_kb: int
    private_kb: int  # pages this process alone maps (what ending it would free)


def command_line(pid: int) -> str:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return " ".join(w for w in raw.decode(errors="replace").split("\0") if w)


def parent_of(pid: int) -> int:
    return int(stat_fields(pid)[1])


ROOTS = {"all": "gunicorn master (`python -m bot`)", "web": "gunicorn master (`bot web`)",
         "worker": "worker pool master (`bot worker`)"}


def role(pid: int, root: int, kind: str = "all") -> str:
    """What a process of a `python -m bot [kind]` tree is, from its place in the tree."""
    line, parent = command_line(pid), parent_of(pid)
    if "redis-server" in line:
        return "embedded redis-server"
    if pid == root:
        return ROOTS[kind]
    if kind == "worker":
        return "RQ worker"
    if parent == root and descendants_of(pid):
        return "worker pool master (forked by `python -m bot`)"
    if parent != root and parent_of(parent) == root:
        return "RQ worker"
    return "gunicorn web worker" if parent == root else line[:60]


def memory_of(pid: int, root: int, kind: str) -> ProcessMemory | None:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        name = role(pid, root, kind)
    except (FileNotFoundError, ProcessLookupError):
        return None
    kb = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:]}
    return ProcessMemory(pid, name, kb["Pss"], kb["Rss"],
                         kb["Private_Clean"] + kb["Private_Dirty"])


def tree_memory(root: int, kind: str = "all") -> list[ProcessMemory]:
    found = [memory_of(pid, root, kind) for pid in sorted({root, *descendants_of(root)})]
    return [m for m in found if m is not None]


@dataclass
class Measured:
    processes: list[ProcessMemory]
    answered: int  # commands that got their link
    stop_seconds: float  # from SIGTERM to the exit of `python -m bot`, after its children


def measure(exotel: ExotelSandbox, slack: FakeSlack, **overrides: str) -> Measured:
    """The process tree of `python -m bot`, idle after MEMORY_COMMANDS commands; then how
    long a graceful stop of it takes."""
    data_dir = tempfile.mkdtemp(prefix="onboard-bench-data-")
    env = bot_env(exotel, slack, **{"ONBOARD_DATA_DIR": data_dir, **UNLIMITED})
    for name in WEB:  # `python -m bot`'s own defaults for one host
        env.pop(name, None)
    env.update(overrides)
    bot = BotProcess(env)  # `python -m bot`: web, workers and embedded Redis
    try:
        bot.start(timeout=60)
        answered = load_then_idle(bot.url, slack)
        assert bot.proc is not None
        processes = tree_memory(bot.proc.pid)
        began = time.monotonic()
        bot.stop(30)  # it exits once its workers and embedded Redis have
        stop_seconds = time.monotonic() - began
    finally:
        bot.stop(30)
        Path(bot.log.name).unlink(missing_ok=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    return Measured(processes, answered, stop_seconds)


def load_then_idle(url: str, slack: FakeSlack) -> int:
    """MEMORY_COMMANDS commands, then IDLE_SECONDS idle: how many got their link."""
    name = f"memory-{len(slack.responses)}"
    timed_commands_elsewhere(url, slack.response_url(name), MEMORY_COMMANDS, CONCURRENCY,
                             "1 memory")
    answers = slack.wait_for_replies(name, MEMORY_COMMANDS, timeout=120)
    time.sleep(IDLE_SECONDS)
    return sum(links_in(a) == 1 for a in answers)


def measure_procfile(exotel: ExotelSandbox, slack: FakeSlack) -> tuple[list[ProcessMemory], int]:
    """The Procfile's `web` and `worker` at their defaults (their Redis not counted), idle
    after MEMORY_COMMANDS commands, and how many of them got their link."""
    with fresh_redis() as url, bot_processes(exotel, slack, url, **UNLIMITED) as bot:
        answered = load_then_idle(bot.web.url, slack)
        trees: list[tuple[BotProcess, str]] = [(bot.web, "web"), (bot.worker, "worker")]
        processes = [memory for proc, kind in trees if proc.proc is not None
                     for memory in tree_memory(proc.proc.pid, kind)]
    return processes, answered


def run(exotel: ExotelSandbox, slack: FakeSlack) -> Section:
    bot = measure(exotel, slack)
    procfile, procfile_answered = measure_procfile(exotel, slack)
    variants = [(overrides, measure(exotel, slack, **overrides).processes)
                for overrides in MEMORY_VARIANTS]
    return memory_section(bot, procfile, procfile_answered, variants)


def total_mb(processes: list[ProcessMemory]) -> float:
    return sum(p.pss_kb for p in processes) / 1024


def memory_section(bot: Measured, procfile: list[ProcessMemory], procfile_answered: int,
                   variants: list[tuple[dict[str, str], list[ProcessMemory]]]) -> Section:
    processes, answered = bot.processes, bot.answered
    total, procfile_total = total_mb(processes), total_mb(procfile)
    pythons = [p for p in processes if "redis-server" not in p.role]
    figures = [
        Figure(f"PSS of `python -m bot`, idle after {MEMORY_COMMANDS} commands "
               f"({len(processes)} processes)", f"{total:.0f} MB",
               f"≤ {MEMORY_TARGET_MB} MB", total <= MEMORY_TARGET_MB),
        Figure("same, the Python processes only",
               f"{total_mb(pythons):.0f} MB over {len(pythons)}"),
        Figure(f"PSS of the Procfile's `web` + `worker` at their defaults, idle after "
               f"{MEMORY_COMMANDS} commands ({len(procfile)} processes)",
               f"{procfile_total:.0f} MB", f"≤ {PROCFILE_TARGET_MB} MB",
               procfile_total <= PROCFILE_TARGET_MB),
    ]
    figures.append(Figure("graceful stop of `python -m bot`, idle: SIGTERM to exit",
                          f"{bot.stop_seconds:.1f} s", f"≤ {STOP_TARGET_SECONDS:.0f} s",
                          bot.stop_seconds <= STOP_TARGET_SECONDS))
    figures += [Figure("`python -m bot` with " + ", ".join(f"{k}={v}" for k, v in
                                                           overrides.items()),
                       f"{total_mb(found):.0f} MB ({len(found)} processes)")
                for overrides, found in variants]
    notes = [
        f"`python -m bot` with REDIS_URL unset (embedded Redis) and a fresh "
        f"ONBOARD_DATA_DIR, its defaults (WEB_CONCURRENCY=1, WORKER_PROCESSES=4); "
        f"{MEMORY_COMMANDS} `/onboard-link 1` commands, 20 at a time, fake Exotel answering at "
        f"once: {answered} answered with their link; then {IDLE_SECONDS:.0f} s idle. PSS: the "
        "sum of `Pss:` in /proc/<pid>/smaps_rollup over the process and all its descendants "
        "(shared pages split between the processes sharing them). Then SIGTERM, timed until "
        "`python -m bot` exits: it exits after its forked worker pool and its embedded Redis.",
        per_process(processes),
        f"The Procfile's `python -m bot web` and `python -m bot worker` with their defaults "
        f"(WEB_CONCURRENCY=1, WORKER_PROCESSES=4) on a redis-server of their own (not "
        f"counted), the same load: {procfile_answered} answered with their link. "
        + per_process(procfile),
    ]
    return Section("4. Memory of the whole bot", figures, notes)


def per_process(processes: list[ProcessMemory]) -> str:
    return "Per process, PSS (RSS, private) in MB: " + "; ".join(
        f"{p.role} {p.pss_kb / 1024:.1f} ({p.rss_kb / 1024:.1f}, "
        f"{p.private_kb / 1024:.1f})" for p in processes) + "."
