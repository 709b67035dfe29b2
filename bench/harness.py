"""What the benchmarks share: the processes they start (throwaway `redis-server`s, the bot's
`web` and `worker`, the bench apps), the fakes served from this process at nice 19, sending
commands and reading replies, and the figures they record, printed and written to
`bench/RESULTS.md` beside their targets."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import requests

from bot.exotel.sandbox import ExotelSandbox
from bot.settings import Settings, load_settings
from testkit.env import ROOT, bot_env
from testkit.processes import BotProcess, RedisProcess, free_port
from testkit.signed import command_body, sign
from testkit.slack import FakeSlack
from testkit.wait import wait_until

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
COMMAND = "uv run python -m bench.run"
# Parts 1, 2 and 4 measure the bot, not Exotel's budget or the per-user daily quota.
UNLIMITED = {"EXOTEL_RATE_PER_MINUTE": "100000", "MAX_LINKS_PER_USER_PER_DAY": "1000000"}
FAKES_NICENESS = 19
WEB = {"WEB_CONCURRENCY": "1", "WEB_THREADS": "32"}  # the defaults, said out loud
CONCURRENCY = 20  # commands in flight at once, for the ack (1) and memory (4) loads
SLOW_EXOTEL = 1.0  # the fake Exotel's answer time in parts 1 and 2, seconds

LINK_MARK = "ua-links/isv-onboard/"  # in every link the fake Exotel makes
TRACEBACKS = "The bot's log has tracebacks: look at it."


# --- figures -------------------------------------------------------------------------------

@dataclass
class Figure:
    """One measured figure beside its target; `passed` is None for context-only figures."""

    label: str
    measured: str
    target: str = ""
    passed: bool | None = None

    @property
    def verdict(self) -> str:
        return "" if self.passed is None else ("PASS" if self.passed else "MISS")


@dataclass
class Section:
    title: str
    figures: list[Figure]
    notes: list[str] = field(default_factory=list)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --- processes and fakes -------------------------------------------------------------------

@contextmanager
def fresh_redis() -> Iterator[str]:
    server = RedisProcess().start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


def bench_settings(redis_url: str, exotel: ExotelSandbox, slack: FakeSlack) -> Settings:
    """The bot's settings for in-process use: the web process's environment (`bot_env`)."""
    return load_settings(_env_file=None, **bot_env(exotel, slack, REDIS_URL=redis_url,
                                                   **UNLIMITED))


@dataclass
class Bot:
    web: BotProcess
    worker: BotProcess
    redis_url: str

    @property
    def url(self) -> str:
        return self.web.url

    def output(self) -> str:
        return self.web.output() + self.worker.output()

    @property
    def tracebacks(self) -> bool:
        return "Traceback" in self.output()


@contextmanager
def bot_processes(exotel: ExotelSandbox, slack: FakeSlack, redis_url: str,
                  **extra: str) -> Iterator[Bot]:
    """The Procfile's two processes: `python -m bot web` and `python -m bot worker`."""
    env = bot_env(exotel, slack, REDIS_URL=redis_url, **WEB, **extra)
    with ExitStack() as stack:
        procs = []
        for args in (("worker",), ("web",)):
            proc = BotProcess(env, *args)
            stack.callback(Path(proc.log.name).unlink, missing_ok=True)
            stack.callback(proc.stop, 30)
            procs.append(proc.start())
        yield Bot(web=procs[1], worker=procs[0], redis_url=redis_url)


@dataclass
class Served:
    url: str
    pid: int


@contextmanager
def served(name: str, exotel: ExotelSandbox, slack: FakeSlack) -> Iterator[Served]:
    """`python -m bench.serve <name>`: a bench app served as `python -m bot web` is."""
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           **bot_env(exotel, slack, PORT=str(port), **WEB)}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.serve", name], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_acking(url, proc, log)
            yield Served(url, proc.pid)
        finally:
            stop_all([proc], 30)


def stop_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """Terminate `procs`, then kill each that has not exited within `timeout` seconds."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_acking(url: str, proc: subprocess.Popen[bytes], log: IO[bytes],
                      timeout: float = 30) -> None:
    body = command_body("/onboard-link", "help", "http://127.0.0.1:9/unused")

    def acking() -> bool:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"gunicorn exited {proc.returncode}:\n{log.read().decode()}")
        try:
            return requests.post(f"{url}/slack/events", data=body.encode(), headers=sign(body),
                                 timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(acking, timeout, "the bench app answers", every=0.1)


def start_as_remote(*fakes: ExotelSandbox | FakeSlack) -> None:
    """Start the fakes' servers at the lowest CPU priority.

    They stand in for Exotel's and Slack's own machines, yet share this one's 2 cores with
    the bot, and answering the bot costs them more CPU than it costs the bot to ask. Linux
    niceness belongs to a thread and passes to the threads it starts: the fakes started from
    a thread at nice 19 serve from threads at nice 19, while this one keeps its own."""
    def start() -> None:
        if hasattr(os, "setpriority"):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), FAKES_NICENESS)
        for fake in fakes:
            fake.start()

    starter = threading.Thread(target=start, name="start-fakes")
    starter.start()
    starter.join()


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: state first, then the parent."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


# --- commands and replies ------------------------------------------------------------------

def send_command(url: str, text: str, response_url: str, user_id: str = "U0REP",
                 session: requests.Session | None = None) -> float:
    """POST one signed /onboard-link; when it was sent (time.monotonic())."""
    body = command_body("/onboard-link", text, response_url, user_id=user_id)
    sent = time.monotonic()
    answer = (session or requests).post(f"{url}/slack/events", data=body.encode(),
                                        headers=sign(body), timeout=10)
    answer.raise_for_status()
    return sent


# bench.load.timed_commands run elsewhere, plus when the run began and ended inside the client
# process (for commands/s, without the client's start-up). time.monotonic() is the machine's
# clock, the one the fake Exotel stamps its calls with.
_CLIENT = ("import json, sys, time; from bench.load import timed_commands; "
           "began = time.monotonic(); latencies = timed_commands(*json.loads(sys.argv[1])); "
           "print(json.dumps([began, time.monotonic(), latencies]))")


def timed_commands_elsewhere(url: str, response_url: str, count: int, concurrency: int,
                             text: str, rate: float | None = None,
                             ) -> tuple[tuple[float, float], list[float]]:
    """((began, ended), sorted ack latencies) of `count` signed commands from another process;
    with `rate`, sent at that steady rate (commands a second) instead of as fast as acked."""
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT,
         json.dumps([url, response_url, count, concurrency, text, rate])],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    began, ended, latencies = json.loads(done.stdout)
    return (began, ended), latencies


def replies_at(slack: FakeSlack, name: str) -> list[tuple[dict[str, Any], float]]:
    """The replies that reached response URL `name` so far, each with when it arrived
    (time.monotonic(), `FakeSlack.arrivals`)."""
    with slack.lock:
        return list(zip(slack.responses.get(name, []), slack.arrivals.get(name, []),
                        strict=True))


def links_in(reply: dict[str, Any]) -> int:
    return json.dumps(reply).count(LINK_MARK)


# --- the report ----------------------------------------------------------------------------

def announce(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


def machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"{os.cpu_count()}-core machine ({model or platform.machine()}), "
            f"Python {platform.python_version()}, {platform.system()}")


class LoadSampler:
    """The machine's 1-minute load average every few seconds while the bench runs: other
    work on the machine (other engineers' tests) makes the figures noisier."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> str:
        self._stop.set()
        self._thread.join()
        mean = sum(self.samples) / len(self.samples)
        return (f"{self.samples[0]:.2f} at the start, {mean:.2f} on average, "
                f"{max(self.samples):.2f} at most, {self.samples[-1]:.2f} at the end")


def report(sections: list[Section], started: datetime, seconds: float, loads: str) -> str:
    lines = [
        "# Benchmark results", "",
        f"`{COMMAND}` on {started:%Y-%m-%d %H:%M} UTC, {machine()}; the run took "
        f"{seconds:.0f} s. Machine load (1-minute load average, other work on the machine "
        f"included): {loads}.", "",
        "| figure | measured | target | |", "|---|---|---|---|",
    ]
    for section in sections:
        for figure in section.figures:
            lines.append(f"| {figure.label} | {figure.measured} | {figure.target} | "
                         f"{figure.verdict} |")
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        lines += [f"- {note}" for note in section.notes]
    return "\n".join(lines) + "\n"


def print_table(sections: list[Section]) -> None:
    rows = [(f.label, f.measured, f.target, f.verdict) for s in sections for f in s.figures]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for section in sections:
        print(f"\n{section.title}")
        for f in section.figures:
            cells = (f.label, f.measured, f.target, f.verdict)
            print("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
        for note in section.notes:
            print(f"    - {note}")
