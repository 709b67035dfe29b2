"""An Exotel ISV API stand-in on loopback that follows the documented semantics.

Links live 24 h; a token turns USED after five onboardings; errors use Exotel's v2 shape.
The test suite uses it as its fake Exotel (with `faults` to make it misbehave), and an
operator can point the bot at it with EXOTEL_BASE_URL before holding ISV credentials.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

LINK_BASE = "https://messaging.exotel.com/ua-links/isv-onboard/"
LINK_TTL = timedelta(hours=24)
MAX_ONBOARDINGS = 5


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops bursts of connections: SYN retried after 1 s


@dataclass
class Fault:
    """One misbehaviour: a status with an optional body, a pause, or an HTML page."""

    status: int = 500
    delay: float = 0.0
    html: bool = False
    retry_after: str | None = None
    passthrough: bool = False  # only delay, then answer normally


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Token:
    issued_at: datetime
    onboardings: int = 0


class ExotelSandbox:
    def __init__(self, api_key: str, api_token: str, account_sid: str, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.account_sid = account_sid
        self._auth = "Basic " + base64.b64encode(f"{api_key}:{api_token}".encode()).decode()
        self.tokens: dict[str, _Token] = {}
        self.calls: list[Call] = []
        self.faults: deque[Fault] = deque()  # consumed one per request, oldest first
        self.always: Fault | None = None  # applied to every request once `faults` is empty
        self._lock = threading.Lock()
        self._server = _Server((host, port), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ExotelSandbox:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.tokens.clear()
            self.calls.clear()
            self.faults.clear()
            self.always = None

    def onboard(self, token: str, customers: int = 1) -> None:
        """Record customers onboarded with a token (what a real customer's signup does)."""
        with self._lock:
            self.tokens[token].onboardings += customers

    def status(self, token: str) -> str | None:
        entry = self.tokens.get(token)
        if entry is None:
            return None
        if entry.onboardings >= MAX_ONBOARDINGS:
            return "USED"
        if datetime.now(UTC) >= entry.issued_at + LINK_TTL:
            return "EXPIRED"
        return "VALID"

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self.faults.popleft() if self.faults else self.always

    def _answer(self, method: str, path: str, query: dict[str, list[str]],
                authorization: str | None) -> tuple[int, dict[str, Any]]:
        if path.rstrip("/") != f"/v2/accounts/{self.account_sid}/isv":
            return 404, _error(404, method, "Not Found", "No such resource")
        if authorization != self._auth:
            return 401, _error(401, method, "Authentication failed",
                               "Necessary credentials were either missing or invalid.")
        if method == "POST":
            token = str(uuid.uuid4())
            with self._lock:
                self.tokens[token] = _Token(issued_at=datetime.now(UTC))
            return 200, _success(method, {"onboarding_url": LINK_BASE + token})
        token = (query.get("access_token") or [""])[0]
        status = self.status(token)
        if status is None:
            return 404, _error(404, method, "Not Found", "Invalid access token")
        return 200, _success(method, {"onboarding_token_status": status})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sandbox = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                authorization = self.headers.get("Authorization")
                with sandbox._lock:
                    sandbox.calls.append(Call(method, parts.path, query, authorization))
                fault = sandbox._next_fault()
                if fault is not None:
                    time.sleep(fault.delay)
                    if not fault.passthrough:
                        self._fault(fault, method)
                        return
                status, body = sandbox._answer(method, parts.path, query, authorization)
                self._send(status, json.dumps(body).encode(), "application/json")

            def _fault(self, fault: Fault, method: str) -> None:
                if fault.html:
                    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
                    self._send(fault.status, page, "text/html")
                    return
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                body = _error(fault.status, method, "Injected failure", "sandbox fault")
                self._send(fault.status, json.dumps(body).encode(), "application/json", headers)

            def _send(self, status: int, body: bytes, content_type: str,
                      headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, as it may

        return Handler


def _envelope(method: str, code: int, isv: dict[str, Any]) -> dict[str, Any]:
    return {"request_id": uuid.uuid4().hex, "method": method, "http_code": code,
            "response": {"whatsapp": {"isv": isv}}}


def _success(method: str, data: dict[str, Any]) -> dict[str, Any]:
    return _envelope(method, 200, {"code": 200, "error_data": None, "status": "success",
                                   "data": data})


def _error(code: int, method: str, message: str, description: str) -> dict[str, Any]:
    return _envelope(method, code, {
        "code": code, "status": "failure", "data": None,
        "error_data": {"code": code * 10, "message": message, "description": description},
    })
