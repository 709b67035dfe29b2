"""A webhook receiver: a loopback HTTP server that records each delivery (headers and raw
body) and answers with the statuses it is told to, in turn; or holds every request
unanswered (a receiver that is down but accepts connections) until released."""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from standardwebhooks import Webhook

from bot.exotel.sandbox import LoopbackServer

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def verified(self, secret: str = SECRET) -> Any:
        """The event, as a receiver checks it with the standardwebhooks package."""
        return Webhook(secret).verify(self.body, self.headers)


class Receiver:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.paths: list[str] = []  # every request's method and path, deliveries or not
        self.answers: deque[int] = deque()  # answered in turn; then `status`
        self.status = 200
        self.location = ""  # sent with a 3xx answer
        self.hang = False  # hold every request unanswered until `release()`
        self.holding = 0  # requests held right now
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server = LoopbackServer(("127.0.0.1", 0), self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def start(self) -> Receiver:
        # A short poll: stop() waits for the loop to notice, once per test.
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def release(self) -> None:
        self._released.set()

    def of_type(self, type_: str) -> list[Delivery]:
        """Deliveries of one event type, by their body (verify each with `verified`: a
        signature's timestamp is checked against the clock when verified)."""
        return [d for d in list(self.deliveries) if json.loads(d.body)["type"] == type_]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                receiver.paths.append(f"GET {self.path}")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                receiver.paths.append(f"POST {self.path}")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.deliveries.append(Delivery(headers, body))
                    status = receiver.answers.popleft() if receiver.answers else receiver.status
                    receiver.holding += receiver.hang
                if receiver.hang:
                    receiver._released.wait(60)
                    with receiver._lock:
                        receiver.holding -= 1
                self.send_response(status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                reply = b'{"secret": "a receiver body the bot must never log"}'
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        return Handler
