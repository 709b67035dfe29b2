"""A stand-in Slack on loopback: the Web API (records every call, answers as Slack's
documented shapes) and response URLs (records every reply).

The one Slack stand-in: the playground (`python -m bot try`) shows what it records as a
small Slack in a browser, and the tests' FakeSlack (testkit.slack) adds waiting to it. It can
be made to misbehave (errors, rate limits, delays) as the tests need, and it refuses Block
Kit that Slack would refuse (bot.playground.blockkit)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import parse_qs

from bot.exotel.sandbox import LoopbackServer
from bot.playground import blockkit

# Parameters slack_sdk sends as JSON text in form-encoded calls.
JSON_PARAMS = {"view", "blocks", "unfurls", "outputs", "metadata", "files"}


@dataclass
class Upload:
    """A file in Slack's external upload flow: files.getUploadURLExternal gave it an id and
    an upload URL, the content arrived there (a POST), files.completeUploadExternal shared
    it in `channel` (None until then)."""

    file_id: str
    filename: str
    length: int
    content: bytes | None = None
    title: str | None = None
    channel: str | None = None
    initial_comment: str | None = None

    @property
    def text(self) -> str:
        return (self.content or b"").decode()


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else (value or {})


def decoded(params: dict[str, Any]) -> dict[str, Any]:
    """A call's parameters with the JSON-valued ones (JSON_PARAMS) decoded."""
    return {k: _json(v) if k in JSON_PARAMS else v for k, v in params.items()}


@dataclass
class ApiCall:
    method: str
    params: dict[str, Any]
    authorization: str | None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))  # when it arrived


# Methods whose `blocks` Slack checks, and the most blocks each takes.
BLOCK_METHODS = {"chat.postMessage": blockkit.MESSAGE_BLOCKS,
                 "chat.postEphemeral": blockkit.MESSAGE_BLOCKS,
                 "chat.update": blockkit.MESSAGE_BLOCKS}
VIEW_METHODS = {"views.open", "views.publish", "views.update", "views.push"}


class SlackStandIn:
    def __init__(self, port: int = 0, app_token: str | None = None,
                 host: str = "127.0.0.1") -> None:
        self.api_calls: list[ApiCall] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}
        # response URL name -> when each reply arrived (time.monotonic(), for the benchmark)
        self.arrivals: dict[str, list[float]] = {}
        # method name -> the Slack error to answer with, e.g. {"chat.postMessage": "not_in_channel"}
        self.errors: dict[str, str] = {}
        self.channel_errors: dict[str, str] = {}  # channel id -> error for chat.postMessage
        self.rate_limited: dict[str, int] = {}  # method -> how many calls get HTTP 429 first
        self.usergroups: dict[str, list[str]] = {}  # user group id -> member user ids
        self.delays: dict[str, float] = {}  # method -> seconds to take over answering
        self.socket_url: str | None = None  # what apps.connections.open hands out
        self.app_token = app_token  # the only app-level token apps.connections.open accepts
        # Per channel, for chat.postMessage: seconds to take over answering (the message is
        # posted first, then the answer waits), and a lasting 429 with this Retry-After.
        self.channel_delays: dict[str, float] = {}
        self.channel_retry_after: dict[str, int] = {}
        self.history_errors: dict[str, str] = {}  # channel -> error for conversations.history
        self.messages: dict[str, list[dict[str, Any]]] = {}  # channel -> posted, oldest first
        self.users: dict[str, dict[str, Any]] = {}  # user id -> users.info's `user`
        self.teams: dict[str, dict[str, Any]] = {}  # team id -> team.info's `team`
        self.uploads: dict[str, Upload] = {}  # file id -> the file, in upload order
        # Block Kit refused as Slack would: (where it was sent, what was wrong), oldest first
        self.refusals: list[tuple[str, list[str]]] = []
        self._last_ts = 0.0
        self.lock = threading.Lock()
        self._server = LoopbackServer((host, port), self._handler())

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, name: str) -> str:
        return f"{self.url}/response/{name}"

    def start(self) -> Self:
        self._server.serve_in_background()
        return self

    def stop(self) -> None:
        self._server.close()

    def reset(self) -> None:
        with self.lock:
            self.api_calls.clear()
            self.responses.clear()
            self.arrivals.clear()
            self.errors.clear()
            self.channel_errors.clear()
            self.rate_limited.clear()
            self.usergroups.clear()
            self.delays.clear()
            self.channel_delays.clear()
            self.channel_retry_after.clear()
            self.history_errors.clear()
            self.messages.clear()
            self.users.clear()
            self.teams.clear()
            self.uploads.clear()
            self.refusals.clear()

    def shared_files(self) -> list[Upload]:
        """The files whose upload was completed (shared in a channel), oldest first."""
        with self.lock:
            return [u for u in self.uploads.values() if u.channel is not None]

    def calls(self, method: str) -> list[ApiCall]:
        with self.lock:
            return [c for c in self.api_calls if c.method == method]

    def replies(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.responses.get(name, []))

    def _answer(self, method: str, params: dict[str, Any],
                authorization: str | None = None) -> dict[str, Any]:
        error = self.errors.get(method)
        if method == "apps.connections.open" and authorization != f"Bearer {self.app_token}":
            error = error or "invalid_auth"
        if method == "chat.postMessage":
            error = error or self.channel_errors.get(str(params.get("channel")))
        if error:
            return {"ok": False, "error": error}
        refused = self.refused_blocks(method, params)
        if refused:
            return refused
        if method == "auth.test":
            return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake",
                    "user": "onboard-bot", "team_id": "T0FAKE", "user_id": "U0BOT",
                    "bot_id": "B0BOT"}
        if method == "chat.postMessage":
            return self._post(params)
        if method == "conversations.history":
            return self._history(params)
        if method == "usergroups.users.list":
            group = str(params.get("usergroup"))
            if group not in self.usergroups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": self.usergroups[group]}
        if method == "apps.connections.open":
            return {"ok": True, "url": self.socket_url}
        if method == "users.info":
            user = self.users.get(str(params.get("user")))
            return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}
        if method == "team.info":
            team = self.teams.get(str(params.get("team")))
            return {"ok": True, "team": team} if team else {"ok": False, "error": "team_not_found"}
        if method == "views.open":
            return {"ok": True, "view": {"id": "V0OPENED", **_json(params.get("view"))}}
        if method == "files.getUploadURLExternal":
            return self._upload_url(params)
        if method == "files.completeUploadExternal":
            return self._complete_upload(params)
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D" + str(params.get("users", "X"))}}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self._next_ts()}
        if method in VIEW_METHODS:
            return {"ok": True, "view": {"id": "V0OPENED", **_json(params.get("view"))}}
        return {"ok": True}

    def refused_blocks(self, method: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """Slack's answer to Block Kit it refuses in a call (invalid_blocks for a message,
        invalid_arguments for a view, or for a preview in chat.unfurl), or None."""
        found: list[str] = []
        if method in BLOCK_METHODS:
            found = blockkit.problems(params.get("blocks"), BLOCK_METHODS[method])
            error = "invalid_blocks"
        elif method in VIEW_METHODS:
            view = _json(params.get("view"))
            found = blockkit.problems(view.get("blocks", []), blockkit.VIEW_BLOCKS)
            error = "invalid_arguments"
        elif method == "chat.unfurl":
            for url, preview in _json(params.get("unfurls")).items():
                found += [f"{url}: {p}" for p in
                          blockkit.problems(preview.get("blocks"), blockkit.MESSAGE_BLOCKS)]
            error = "invalid_unfurls"
        if not found:
            return None
        self.rejected(method, found)
        return {"ok": False, "error": error, "errors": found,
                "response_metadata": {"messages": [f"[ERROR] {p}" for p in found]}}

    def rejected(self, where: str, problems: list[str]) -> None:
        """Block Kit Slack would refuse arrived (a Web API method, or a response URL)."""
        with self.lock:
            self.refusals.append((where, problems))

    def respond(self, name: str, params: dict[str, Any], arrived: float) -> tuple[int, bytes]:
        """A reply to the response URL `name`: recorded, unless Slack would refuse it."""
        found = blockkit.problems(params.get("blocks"), blockkit.MESSAGE_BLOCKS)
        if found:
            self.rejected(f"response URL {name}", found)
            return 400, b"invalid_blocks"
        with self.lock:
            self.responses.setdefault(name, []).append(params)
            self.arrivals.setdefault(name, []).append(arrived)
        return 200, b"ok"

    def page(self, method: str, path: str, body: bytes,
             headers: Mapping[str, str]) -> tuple[int, bytes, str] | None:
        """What a request outside the Web API, response URLs and uploads gets (`headers` by
        lower-case name): nothing here (None: it is taken for an API call); the playground
        serves its page."""
        return None

    def _next_ts(self) -> str:
        """A message timestamp: unique and rising, as Slack's are."""
        with self.lock:
            self._last_ts = max(time.time(), self._last_ts + 0.000001)
            return f"{self._last_ts:.6f}"

    def params(self, method: str) -> list[dict[str, Any]]:
        """The parameters of every call to `method`, JSON-valued ones decoded."""
        return [decoded(c.params) for c in self.calls(method)]

    def _upload_url(self, params: dict[str, Any]) -> dict[str, Any]:
        """files.getUploadURLExternal: `filename` and `length` (bytes) required."""
        filename, length = params.get("filename"), str(params.get("length", ""))
        if not filename or not length.isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        with self.lock:
            file_id = f"F{len(self.uploads) + 1:08d}"
            self.uploads[file_id] = Upload(file_id, str(filename), int(length))
        return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _receive(self, file_id: str, content: bytes) -> tuple[int, bytes]:
        """The POST to an upload URL: the file's bytes, as many as promised."""
        with self.lock:
            upload = self.uploads.get(file_id)
            if upload is None:
                return 404, b"not found"
            if len(content) != upload.length:
                return 400, b"length mismatch"
            upload.content = content
        return 200, f"OK - {len(content)}".encode()

    def _complete_upload(self, params: dict[str, Any]) -> dict[str, Any]:
        """files.completeUploadExternal: `files` (JSON [{id, title}]), shared in
        `channel_id`; each file's bytes must have arrived."""
        try:
            files = _json(params.get("files"))
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        done = []
        with self.lock:
            for item in files if isinstance(files, list) else []:
                upload = self.uploads.get(str(item.get("id")))
                if upload is None or upload.content is None:
                    return {"ok": False, "error": "file_not_found"}
                upload.title = item.get("title") or upload.filename
                upload.channel = params.get("channel_id")
                upload.initial_comment = params.get("initial_comment")
                done.append({"id": upload.file_id, "title": upload.title,
                             "name": upload.filename})
        if not done:
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "files": done}

    def _post(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel"))
        metadata = params.get("metadata")
        if isinstance(metadata, str):  # form-encoded calls send it as JSON text
            metadata = json.loads(metadata)
        ts = self._next_ts()
        with self.lock:
            message = {"type": "message", "ts": ts, "text": params.get("text"),
                       "bot_id": "B0BOT", "metadata": metadata}
            self.messages.setdefault(channel, []).append(message)
        return {"ok": True, "channel": channel, "ts": ts,
                "message": {"text": params.get("text")}}

    def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        """conversations.history: newest first, after `oldest`; metadata only when asked."""
        channel = str(params.get("channel"))
        if channel in self.history_errors:
            return {"ok": False, "error": self.history_errors[channel]}
        oldest = float(params.get("oldest") or 0)
        with_metadata = str(params.get("include_all_metadata")).lower() in ("true", "1")
        with self.lock:
            found = [dict(m) for m in self.messages.get(channel, []) if float(m["ts"]) > oldest]
        for message in found:
            if not with_metadata or message["metadata"] is None:
                del message["metadata"]
        return {"ok": True, "messages": found[::-1], "has_more": False,
                "response_metadata": {"next_cursor": ""}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # slack_sdk reads conversations.history with GET
                if (served := fake.page("GET", self.path, b"", self._headers())) is not None:
                    self._send(served[1], served[2], status=served[0])
                    return
                query = self.path.partition("?")[2]
                self._api({k: v[0] for k, v in parse_qs(query).items()})

            def do_POST(self) -> None:
                arrived = time.monotonic()  # before reading: the request is here
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if (served := fake.page("POST", self.path, body, self._headers())) is not None:
                    self._send(served[1], served[2], status=served[0])
                    return
                if self.path.startswith("/upload/"):  # a file's bytes, as they are
                    status, answer = fake._receive(self.path.removeprefix("/upload/"), body)
                    self._send(answer, "text/plain", status=status)
                    return
                raw = body.decode()
                if "json" in (self.headers.get("Content-Type") or ""):
                    params = json.loads(raw or "{}")
                else:
                    params = {k: v[0] for k, v in parse_qs(raw).items()}
                if self.path.startswith("/response/"):
                    status, answer = fake.respond(self.path.removeprefix("/response/"),
                                                  params, arrived)
                    self._send(answer, "text/plain", status=status)
                    return
                self._api(params)

            def _headers(self) -> dict[str, str]:
                """The request's headers, by lower-case name."""
                return {name.lower(): value for name, value in self.headers.items()}

            def _api(self, params: dict[str, Any]) -> None:
                method = self.path.removeprefix("/api/").split("?")[0]
                channel = str(params.get("channel"))
                posting = method == "chat.postMessage"
                with fake.lock:
                    fake.api_calls.append(
                        ApiCall(method, params, self.headers.get("Authorization")))
                    limited = fake.rate_limited.get(method, 0)
                    if limited:
                        fake.rate_limited[method] = limited - 1
                    retry_after = fake.channel_retry_after.get(channel) if posting else None
                if limited or retry_after:
                    body = json.dumps({"ok": False, "error": "ratelimited"}).encode()
                    self._send(body, "application/json", status=429,
                               headers={"Retry-After": str(retry_after or 1)})
                    return
                answer = fake._answer(method, params, self.headers.get("Authorization"))
                # posted now, answered after the delay
                time.sleep(fake.delays.get(method, 0.0)
                           + (fake.channel_delays.get(channel, 0.0) if posting else 0.0))
                self._send(json.dumps(answer).encode(), "application/json")

            def _send(self, body: bytes, content_type: str, status: int = 200,
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
