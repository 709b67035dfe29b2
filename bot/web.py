"""The HTTP face of the bot: Slack's /slack/events and an operator's /healthz, as WSGI."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.store import StoreUnavailable, TokenStore

EVENTS_PATH = "/slack/events"
StartResponse = Callable[..., Any]


def create_wsgi(app: App, store: TokenStore) -> Callable[[dict, StartResponse], Iterable[bytes]]:
    slack = SlackRequestHandler(app, path=EVENTS_PATH)

    def application(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _healthz(store, start_response)
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


def _plain(start_response: StartResponse, status: str, text: str) -> Iterable[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]
