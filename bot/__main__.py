"""Entry points: `python -m bot` runs the whole bot; `python -m bot web` only its web process."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from bot import embedded_redis, logs
from bot.settings import Settings, SettingsError, load_settings

log = logging.getLogger("bot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument(
        "process", nargs="?", default="all", choices=["all", "web"],
        help="all: the whole bot in one process (default); web: the HTTP process only",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as problem:
        print(problem, file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.secrets())
    settings = _with_redis(settings)

    from bot import server  # after settings: importing Bolt is slow, errors should be quick

    if settings.socket_mode and args.process == "all":
        server.serve_socket_mode(settings)
    else:
        server.serve_http(settings)
    return 0


def _with_redis(settings: Settings) -> Settings:
    """Start the embedded Redis when none is configured, and tell child processes about it."""
    if settings.redis_url:
        return settings
    url = embedded_redis.start(settings.data_dir)
    os.environ["REDIS_URL"] = url
    return settings.model_copy(update={"redis_url": url})


if __name__ == "__main__":
    sys.exit(main())
