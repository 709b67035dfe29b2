"""`python -m bot try [--port 3000]`: the bot as production runs it, against stand-ins.

It needs no settings and touches nothing real: the bot (`python -m bot`: the HTTP web
process on loopback, the forked worker pool and the embedded Redis, exactly as an operator
runs it) gets settings made here, pointed at the sandbox Exotel and at the stand-in Slack
that this process serves as a page in a browser. The bot's own settings in `.env` and the
environment (Slack's and Exotel's credentials, REDIS_URL, webhook URLs, proxies…) are not
passed on, and the bot runs in the playground's own folder, where no `.env` is read."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TextIO

import requests

from bot.exotel.sandbox import DEFAULTS, ExotelSandbox
from bot.playground.workspace import Workspace, loopback_session
from bot.runtime.lifetime import die_with_parent
from bot.settings import LINK_TTL, Settings

DEFAULT_PORT = 3000
FOLDER = "playground"  # under ONBOARD_DATA_DIR
REMINDER_AFTER = timedelta(minutes=3)  # after a link is issued: its whole life in minutes
STATUS_POLL_SECONDS = 20
WORKER_PROCESSES = 2  # a laptop's share; production's default is 4
STOP_SECONDS = 12  # then the bot is killed: Ctrl-C leaves nothing behind within 15 s
READY_SECONDS = 60
# The bot's settings the playground takes from the environment (never from .env): how it
# logs. Everything else of the bot's is made here.
KEPT = ("LOG_LEVEL", "LOG_FORMAT")
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
IGNORED_LINE = ("Playground: the SLACK_*, EXOTEL_*, REDIS_URL and other bot settings of .env "
                "and the environment are ignored; nothing real is touched.")


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot try",
        description="Try the bot in a browser: a stand-in Slack and Exotel, no settings.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"the page's port on 127.0.0.1 (default {DEFAULT_PORT})")
    args = parser.parse_args(argv)
    out = out or sys.stdout
    data_dir = data_folder(os.environ, Path.cwd())
    data_dir.mkdir(parents=True, exist_ok=True)
    sandbox = ExotelSandbox(DEFAULTS["EXOTEL_API_KEY"], DEFAULTS["EXOTEL_API_TOKEN"],
                            DEFAULTS["EXOTEL_ACCOUNT_SID"]).start()
    secret = secrets.token_hex(32)
    try:
        workspace = Workspace(args.port, secret,
                              complete=sandbox.complete)
    except OSError as error:
        print(f"The playground cannot listen on 127.0.0.1:{args.port} ({error.strerror}); "
              "pick another port with --port.", file=sys.stderr)
        return 1
    workspace.start()
    bot_port = free_port()
    workspace.bot_url = f"http://127.0.0.1:{bot_port}"
    env = bot_environment(os.environ, slack_api_url=workspace.api_url,
                          exotel_url=sandbox.url, signing_secret=secret,
                          data_dir=data_dir, port=bot_port)
    print(IGNORED_LINE, file=out)
    print(f"Data in {data_dir}. Reminders {_minutes(REMINDER_AFTER)} after a link is issued "
          f"(REMINDER_LEAD={env['REMINDER_LEAD']}), status polls every {STATUS_POLL_SECONDS} s "
          f"(STATUS_POLL_SECONDS).", file=out)
    print(f"Open http://127.0.0.1:{args.port}/ (the bot listens on {workspace.bot_url}; "
          "Ctrl-C stops everything).", file=out, flush=True)
    return _supervise(env, data_dir, workspace.bot_url, out)


def data_folder(environ: Mapping[str, str], cwd: Path) -> Path:
    """The playground's own folder: `playground` under ONBOARD_DATA_DIR (from the
    environment, else `.env`, else the bot's default), as an absolute path."""
    configured = environ.get("ONBOARD_DATA_DIR") or _from_dotenv(cwd / ".env",
                                                                 "ONBOARD_DATA_DIR")
    base = Path(configured or Settings.model_fields["data_dir"].default)
    return (cwd / base / FOLDER).resolve()


def bot_environment(environ: Mapping[str, str], *, slack_api_url: str, exotel_url: str,
                    signing_secret: str, data_dir: Path, port: int) -> dict[str, str]:
    """The environment `python -m bot` runs in: the machine's, less every setting of the
    bot's and every proxy, plus the playground's settings."""
    names = {str(f.alias) for f in Settings.model_fields.values()}
    env = {k: v for k, v in environ.items()
           if (k not in names or k in KEPT) and k.upper() not in PROXIES
           and not k.upper().startswith(("SLACK_", "EXOTEL_"))}
    root = str(Path(__file__).resolve().parents[2])  # where the bot package is
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update({
        "SLACK_BOT_TOKEN": "xoxb-playground", "SLACK_SIGNING_SECRET": signing_secret,
        "SLACK_API_URL": slack_api_url,
        **DEFAULTS, "EXOTEL_BASE_URL": exotel_url,
        "ONBOARD_DATA_DIR": str(data_dir), "WEB_HOST": "127.0.0.1", "PORT": str(port),
        "REMINDER_LEAD": str(int((LINK_TTL - REMINDER_AFTER).total_seconds())),
        "STATUS_POLL_SECONDS": str(STATUS_POLL_SECONDS),
        "WORKER_PROCESSES": str(WORKER_PROCESSES), "WEB_CONCURRENCY": "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _supervise(env: dict[str, str], data_dir: Path, bot_url: str, out: TextIO) -> int:
    """Run the bot until it exits or this process is told to stop (Ctrl-C, SIGTERM)."""
    signal.signal(signal.SIGTERM, _interrupt)
    parent = os.getpid()
    bot = subprocess.Popen([sys.executable, "-m", "bot"], cwd=data_dir, env=env,
                           preexec_fn=lambda: die_with_parent(signal.SIGTERM, parent))
    announced = False
    try:
        deadline = time.monotonic() + READY_SECONDS
        while bot.poll() is None:
            if not announced and _healthy(bot_url):
                print("Ready.", file=out, flush=True)
                announced = True
            elif not announced and time.monotonic() > deadline:
                print(f"The bot is not answering after {READY_SECONDS} s; still waiting.",
                      file=out, flush=True)
                deadline = float("inf")
            time.sleep(0.2)
        print(f"The bot exited ({bot.returncode}).", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Stopping…", file=out, flush=True)
        _stop(bot)
        return 0


def _stop(bot: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the bot stops its workers and Redis), then SIGKILL if it lingers."""
    if bot.poll() is None:
        bot.terminate()
    try:
        bot.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        bot.kill()  # its own children die with it (die_with_parent)
        bot.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _healthy(url: str) -> bool:
    try:
        with loopback_session() as session:
            return session.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def free_port() -> int:
    """A port on 127.0.0.1 free right now (the tests' processes take theirs here too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _from_dotenv(path: Path, name: str) -> str | None:
    if not path.is_file():
        return None
    from dotenv import dotenv_values  # pydantic-settings reads .env with it too

    return dotenv_values(path).get(name) or None


def _minutes(span: timedelta) -> str:
    return f"{int(span.total_seconds() // 60)} min"
