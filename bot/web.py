"""The HTTP face of the bot: Slack's /slack/events and an operator's /healthz, as WSGI."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot import metrics
from bot.app import Services
from bot.core import Core
from bot.store import StoreUnavailable, TokenStore

EVENTS_PATH = "/slack/events"
StartResponse = Callable[..., Any]


def create_wsgi(app: App, services: Services) -> Callable[[dict, StartResponse], Iterable[bytes]]:
    slack = SlackRequestHandler(app, path=EVENTS_PATH)
    core = services.core
    store = core.store

    def application(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _healthz(store, start_response)
        if path == "/metrics":
            return _metrics(core, start_response)
        if path == EVENTS_PATH:
            return slack(environ, start_response)
        return _plain(start_response, "404 Not Found", "not found\n")

    return application


def _healthz(store: TokenStore, start_response: StartResponse) -> Iterable[bytes]:
    try:
        store.ensure_available()
    except StoreUnavailable:
        return _plain(start_response, "503 Service Unavailable", "redis: down\n")
    return _plain(start_response, "200 OK", "ok\n")


def _metrics(core: Core, start_response: StartResponse) -> Iterable[bytes]:
    try:
        body = metrics.render(core.metrics.redis, core.reminders.queue)
    except redis.RedisError:
        return _plain(start_response, "503 Service Unavailable", "redis: down\n")
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                              ("Content-Length", str(len(body)))])
    return [body]


def _plain(start_response: StartResponse, status: str, text: str) -> Iterable[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]
