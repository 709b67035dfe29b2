"""The HTTP face of the bot: Slack's /slack/events, /healthz and /metrics, as WSGI.

Requests to /slack/events are checked here before Bolt sees them: size, encoding and
signature first (a refused request is never parsed nor logged), then the body is parsed by
field, as Bolt's own parser cannot be trusted to (docs/decisions/0006-web-front.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from slack_bolt import App
from slack_bolt.adapter.wsgi.http_request import WsgiHttpRequest
from slack_bolt.adapter.wsgi.http_response import WsgiHttpResponse
from slack_bolt.request import BoltRequest
from slack_sdk.signature import SignatureVerifier

from bot.domain.store import StoreUnavailable, TokenStore
from bot.slack.core import Core
from bot.telemetry import metrics

EVENTS_PATH = "/slack/events"
# Slack's requests are a few kB; anything over this is refused unread (413).
MAX_BODY = 1 << 20
Environ = dict[str, Any]  # a WSGI environ
StartResponse = Callable[..., Any]
_TIMESTAMP = re.compile(r"\d{1,12}")


class Refused(Exception):
    """A request answered with `status` and a short fixed text, before Bolt sees it."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def create_wsgi(app: App, core: Core) -> WSGIApp:
    settings = core.settings
    secret = settings.slack_signing_secret
    slack = SlackEvents(app, secret.get_secret_value() if secret else None)
    serve_metrics = metrics_endpoint(core)
    store = core.store

    def application(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _healthz(store, start_response)
        if path == "/metrics" and serve_metrics:
            return serve_metrics(environ, start_response)
        if path == EVENTS_PATH:
            return slack(environ, start_response)
        return _plain(start_response, "404 Not Found", "not found\n")

    return application


class FieldParsedRequest(BoltRequest):
    """A BoltRequest whose body was parsed by `parse_slack_body`, not by Bolt's parse_body.

    Bolt takes any form body that contains the substring "payload" for an interaction
    (slack_bolt/request/internals.py parse_body), so a command whose text, channel, user or
    team name holds the word was dropped with 404. tests/test_slack_requests.py checks
    whether a new Bolt release still does; when it no longer does, this class can go."""

    def __init__(self, *, body: str, parsed: dict[str, Any], **kwargs: Any) -> None:
        # Handed over parsed, as Socket Mode hands its payloads, so Bolt does not parse the
        # body again; then made the HTTP request it is, raw body kept for Bolt's own check.
        super().__init__(body=parsed, mode="socket_mode", **kwargs)
        self.raw_body = body
        self.mode = "http"

    def to_copyable(self) -> BoltRequest:
        return FieldParsedRequest(body=self.raw_body, parsed=self.body, query=self.query,
                                  headers=self.headers, context=self.context.to_copyable())


def parse_slack_body(body: str, content_type: str | None) -> dict[str, Any]:
    """What Slack sent, read by field: JSON (events), an interaction's `payload` field (JSON
    in a form), or a form (slash commands). ValueError for anything else."""
    try:
        if content_type == "application/json" or body.startswith("{"):
            parsed = json.loads(body)
        else:
            fields = dict(parse_qsl(body, keep_blank_values=True))
            parsed = json.loads(fields["payload"]) if "payload" in fields else fields
    except RecursionError:  # JSON nested deeper than the interpreter's stack
        raise ValueError("nested too deeply") from None
    if not isinstance(parsed, dict):
        raise ValueError("not an object")
    return parsed


class SlackEvents:
    """Slack's requests, checked and parsed here, then dispatched to Bolt."""

    def __init__(self, app: App, signing_secret: str | None) -> None:
        self._app = app
        self._verifier = SignatureVerifier(signing_secret) if signing_secret else None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request = WsgiHttpRequest(environ)
        try:
            bolt_request = self._checked(request)
        except Refused as refused:
            return _plain(start_response, refused.status, refused.status[4:] + "\n")
        response = self._app.dispatch(bolt_request)
        answer = WsgiHttpResponse(response.status, response.headers, response.body)
        start_response(answer.status, answer.get_headers())
        return answer.get_body()

    def _checked(self, request: WsgiHttpRequest) -> BoltRequest:
        if request.method != "POST":
            raise Refused("405 Method Not Allowed")
        headers = request.get_headers()
        if str(headers.get("content-encoding", "identity")).strip().lower() != "identity":
            raise Refused("400 Bad Request")  # Slack never compresses its requests
        raw = read_body(request.environ)
        self._verify(raw, headers)
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused("400 Bad Request") from None
        content_type = str(headers.get("content-type", "")).split(";")[0].strip().lower()
        try:
            parsed = parse_slack_body(body, content_type or None)
        except ValueError:
            raise Refused("400 Bad Request") from None
        return FieldParsedRequest(body=body, parsed=parsed, query=request.query_string,
                                  headers=headers)

    def _verify(self, raw: bytes, headers: dict[str, Any]) -> None:
        """Slack's signature, on the raw bytes, before anything reads them."""
        if self._verifier is None:  # Socket Mode: Slack sends nothing over HTTP
            raise Refused("401 Unauthorized")
        timestamp = str(headers.get("x-slack-request-timestamp", ""))
        signature = str(headers.get("x-slack-signature", ""))
        if not _TIMESTAMP.fullmatch(timestamp) or not signature.startswith("v0="):
            raise Refused("401 Unauthorized")
        try:
            valid = self._verifier.is_valid(raw, timestamp, signature)
        except UnicodeDecodeError:  # slack_sdk decodes the body to sign it
            valid = False
        if not valid:
            raise Refused("401 Unauthorized")


def read_body(environ: Environ) -> bytes:
    """The request body, refused with 413 past MAX_BODY without reading more than that."""
    length = environ.get("CONTENT_LENGTH") or ""
    if length and not length.isdigit():
        raise Refused("400 Bad Request")
    if length and int(length) > MAX_BODY:
        raise Refused("413 Content Too Large")
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    raw: bytes = stream.read(int(length)) if length else stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise Refused("413 Content Too Large")
    return raw


def _healthz(store: TokenStore, start_response: StartResponse) -> Iterable[bytes]:
    try:
        store.ensure_available()
    except StoreUnavailable:
        return _plain(start_response, "503 Service Unavailable", "redis: down\n")
    return _plain(start_response, "200 OK", "ok\n")


def metrics_endpoint(core: Core) -> WSGIApp | None:
    """/metrics for Prometheus, behind METRICS_TOKEN; None while it is unset."""
    token = core.settings.metrics_token
    if token is None:
        return None
    # Scheduled reminders wait in the reminders' own sorted set, not in RQ's registry.
    collector = metrics.QueueCollector(core.queues, {
        core.reminders.queue.name: core.reminders.scheduled_count})
    return metrics.metrics_app(token.get_secret_value(), collector)


def _plain(start_response: StartResponse, status: str, text: str) -> Iterable[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]
