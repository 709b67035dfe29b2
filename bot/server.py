"""Serving the bot: gunicorn for HTTP mode, Bolt's Socket Mode client otherwise."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from bot.app import build_services, create_app
from bot.settings import Settings, load_settings
from bot.web import create_wsgi

log = logging.getLogger(__name__)


def wsgi_application() -> Callable[..., Any]:
    """Build the whole bot from the environment; gunicorn calls this in each worker."""
    services = build_services(load_settings())
    return create_wsgi(create_app(services), services)


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "bind": f"0.0.0.0:{settings.port}",
        "worker_class": "gthread",
        # Each worker runs its own ack and Exotel pools; threads serve concurrent requests.
        "workers": int(os.environ.get("WEB_CONCURRENCY", "2")),
        "threads": int(os.environ.get("WEB_THREADS", "32")),
        "timeout": 30,
        "graceful_timeout": 20,  # platforms give 30 s after SIGTERM
        "keepalive": 5,
        "accesslog": None,
    }


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Callable[..., Any]:
        return wsgi_application()


def serve_http(settings: Settings) -> None:
    log.info("serving Slack events on http://0.0.0.0:%d/slack/events", settings.port)
    _Gunicorn(gunicorn_options(settings)).run()


def serve_socket_mode(settings: Settings) -> None:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    services = build_services(settings)
    app = create_app(services)
    assert settings.slack_app_token is not None
    log.info("connecting to Slack in Socket Mode")
    SocketModeHandler(app, settings.slack_app_token.get_secret_value()).start()
