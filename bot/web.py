"""The HTTP face of the bot: Slack's /slack/events and an operator's /healthz, as WSGI."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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
    core, background = services.core, services.background
    store = core.store

    def application(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _healthz(store, start_response)
        if path == "/metrics":
            return _metrics(core, start_response)
        if path == EVENTS_PATH:
            background.hold()  # the work a listener hands on leaves once Slack has the ack
            try:
                return _Then(slack(environ, start_response), background.release)
            except BaseException:
                background.release()
                raise
        return _plain(start_response, "404 Not Found", "not found\n")

    return application


class _Then:
    """A response body that calls `after` once the server is done sending it (PEP 3333:
    servers call `close()` on every body that has one, even when the client went away)."""

    def __init__(self, body: Iterable[bytes], after: Callable[[], None]) -> None:
        self._body = body
        self._after = after

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        self._after()


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
