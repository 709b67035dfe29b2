"""An Exotel ISV API stand-in on loopback that follows the documented semantics.

Links live 24 h; a token turns USED after five onboardings; errors use Exotel's v2 shape.
The test suite uses it as its fake Exotel (with `faults` to make it misbehave), and an
operator can point the bot at it with EXOTEL_BASE_URL before holding ISV credentials:

    python -m bot sandbox [--port 4010]

serves it on 127.0.0.1 with EXOTEL_API_KEY, EXOTEL_API_TOKEN and EXOTEL_ACCOUNT_SID from the
environment (or sandbox defaults). What a customer's signup would do, mark a token used:

    curl -X POST 'http://127.0.0.1:4010/sandbox/tokens/<token>/onboard?customers=5'
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn, TextIO
from urllib.parse import parse_qs, unquote, urlsplit

from bot.exotel.client import SANDBOX_HEADER

LINK_BASE = "https://messaging.exotel.com/ua-links/isv-onboard/"
LINK_TTL = timedelta(hours=24)
MAX_ONBOARDINGS = 5
DEFAULT_PORT = 4010
# Used by `python -m bot sandbox` for whatever the environment does not set.
DEFAULTS = {"EXOTEL_API_KEY": "sandbox-key", "EXOTEL_API_TOKEN": "sandbox-token",
            "EXOTEL_ACCOUNT_SID": "sandbox"}
CONTROL_PREFIX = "/sandbox/tokens/"  # the sandbox's own endpoints, not Exotel's API


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server for stand-ins (this sandbox, the stand-in Slack), served from
    a background thread."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 drops bursts of connections: SYN retried after 1 s

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    def serve_in_background(self) -> None:
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self.shutdown()
        self.server_close()


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
        self.api_key = api_key
        self._auth = "Basic " + base64.b64encode(f"{api_key}:{api_token}".encode()).decode()
        self.tokens: dict[str, _Token] = {}
        self.calls: list[Call] = []
        self.faults: deque[Fault] = deque()  # consumed one per request, oldest first
        self.always: Fault | None = None  # applied to every request once `faults` is empty
        self.announce = True  # False: no SANDBOX_HEADER, so the bot takes it for Exotel itself
        # Calls being answered, and when the last answer went (time.monotonic()): a fault
        # test kills a worker only while no answer of Exotel's is on its way to it.
        self.answering = 0
        self.answered_at = 0.0
        self._lock = threading.Lock()
        self._server = LoopbackServer((host, port), self._handler())

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> ExotelSandbox:
        self._server.serve_in_background()
        return self

    def stop(self) -> None:
        self._server.close()

    def reset(self) -> None:
        with self._lock:
            self.tokens.clear()
            self.calls.clear()
            self.faults.clear()
            self.always = None
            self.announce = True

    def onboard(self, token: str, customers: int = 1) -> None:
        """Record customers onboarded with a token (what a real customer's signup does)."""
        if self._mark_onboarded(token, customers) is None:
            raise KeyError(token)

    def complete(self, token: str) -> bool:
        """Onboard customers with a token until it is USED (what the playground's Complete
        onboarding does); False for a token never issued or already EXPIRED."""
        with self._lock:
            entry = self.tokens.get(token)
            if entry is not None and self.status(token) == "VALID":
                entry.onboardings = MAX_ONBOARDINGS
        return self.status(token) == "USED"

    def status(self, token: str) -> str | None:
        entry = self.tokens.get(token)
        if entry is None:
            return None
        if entry.onboardings >= MAX_ONBOARDINGS:
            return "USED"
        if datetime.now(UTC) >= entry.issued_at + LINK_TTL:
            return "EXPIRED"
        return "VALID"

    def _mark_onboarded(self, token: str, customers: int) -> dict[str, Any] | None:
        """onboard() for the HTTP control endpoint: None for a token never issued."""
        with self._lock:
            entry = self.tokens.get(token)
            if entry is None:
                return None
            entry.onboardings += customers
            onboardings = entry.onboardings
        return {"token": token, "onboardings": onboardings, "status": self.status(token)}

    def _control(self, method: str, path: str, query: dict[str, list[str]],
                 client_host: str) -> tuple[int, dict[str, Any]]:
        """POST /sandbox/tokens/<token>/onboard?customers=N: no auth, so loopback only."""
        if not ipaddress.ip_address(client_host).is_loopback:
            return 403, {"error": "the sandbox's own endpoints answer loopback clients only"}
        token, _, action = path.removeprefix(CONTROL_PREFIX).rstrip("/").rpartition("/")
        if method != "POST" or action != "onboard" or not token:
            return 404, {"error": f"use POST {CONTROL_PREFIX}<token>/onboard?customers=N"}
        try:
            customers = int((query.get("customers") or ["1"])[0])
        except ValueError:
            customers = 0
        if customers < 1:
            return 400, {"error": "customers must be a whole number, 1 or more"}
        result = self._mark_onboarded(unquote(token), customers)
        if result is None:
            return 404, {"error": "the sandbox never issued this token", "token": token}
        return 200, result

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
                if parts.path.startswith(CONTROL_PREFIX):
                    # Not Exotel's API: neither recorded in `calls` nor subject to faults.
                    status, body = sandbox._control(method, parts.path, query,
                                                    self.client_address[0])
                    self._send(status, json.dumps(body).encode(), "application/json")
                    return
                authorization = self.headers.get("Authorization")
                with sandbox._lock:
                    sandbox.calls.append(Call(method, parts.path, query, authorization))
                    sandbox.answering += 1
                try:
                    self._serve_api(method, parts.path, query, authorization)
                finally:
                    with sandbox._lock:
                        sandbox.answering -= 1
                        sandbox.answered_at = time.monotonic()

            def _serve_api(self, method: str, path: str, query: dict[str, list[str]],
                           authorization: str | None) -> None:
                fault = sandbox._next_fault()
                if fault is not None:
                    time.sleep(fault.delay)
                    if not fault.passthrough:
                        self._fault(fault, method)
                        return
                status, body = sandbox._answer(method, path, query, authorization)
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
                    # So the bot can tell its users that these are not real links.
                    if sandbox.announce:
                        self.send_header(SANDBOX_HEADER, "1")
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


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """`python -m bot sandbox`: serve until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m bot sandbox",
                                     description="A stand-in Exotel ISV API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT})")
    args = parser.parse_args(argv)
    out = out or sys.stdout
    env = {name: os.environ.get(name) or default for name, default in DEFAULTS.items()}
    try:
        sandbox = ExotelSandbox(env["EXOTEL_API_KEY"], env["EXOTEL_API_TOKEN"],
                                env["EXOTEL_ACCOUNT_SID"], port=args.port)
    except OSError as error:
        print(f"The sandbox cannot listen on 127.0.0.1:{args.port} ({error.strerror}); "
              "pick another port with --port.", file=sys.stderr)
        return 1
    serve(sandbox, out, token_from_env=bool(os.environ.get("EXOTEL_API_TOKEN")))
    return 0


def serve(sandbox: ExotelSandbox, out: TextIO, *, token_from_env: bool = False) -> None:
    """Say how to point the bot here, then answer requests in this thread until stopped."""
    print(instructions(sandbox, token_from_env), file=out, flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops it like Ctrl-C
    try:
        sandbox._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sandbox._server.server_close()


def instructions(sandbox: ExotelSandbox, token_from_env: bool) -> str:
    # A token the operator set is theirs to know; the default one is no secret.
    token = "(as set in this environment)" if token_from_env else DEFAULTS["EXOTEL_API_TOKEN"]
    return "\n".join([
        f"Exotel sandbox listening on {sandbox.url} (Ctrl-C to stop).",
        "Point the bot at it with:",
        f"  EXOTEL_BASE_URL={sandbox.url}",
        f"  EXOTEL_API_KEY={sandbox.api_key}",
        f"  EXOTEL_API_TOKEN={token}",
        f"  EXOTEL_ACCOUNT_SID={sandbox.account_sid}",
        "Mark a token used (what five customers signing up would do):",
        f"  curl -X POST '{sandbox.url}{CONTROL_PREFIX}<token>/onboard?customers=5'",
    ])


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt
