"""Slack's end of Socket Mode: a WebSocket server that sends the bot envelopes and keeps its acks.

The bot finds it through the fake Slack's `apps.connections.open`, as it finds Slack's own.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from testkit.wait import wait_until


class FakeSocketMode:
    def __init__(self) -> None:
        self.acks: dict[str, dict[str, Any]] = {}  # envelope id -> what the bot sent back
        self._connections: list[ServerConnection] = []
        self._lock = threading.Lock()
        self._server: Server = serve(self._serve, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}/link/?ticket=fake"

    def start(self) -> FakeSocketMode:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    @property
    def connected(self) -> bool:
        with self._lock:
            return bool(self._connections)

    def send(self, kind: str, payload: dict[str, Any]) -> str:
        """Send one envelope (e.g. "slash_commands") to the bot; returns its id."""
        envelope_id = uuid.uuid4().hex
        with self._lock:
            connection = self._connections[-1]
        connection.send(json.dumps({"envelope_id": envelope_id, "type": kind,
                                    "payload": payload, "accepts_response_payload": True}))
        return envelope_id

    def wait_for_ack(self, envelope_id: str, timeout: float = 10) -> dict[str, Any]:
        wait_until(lambda: envelope_id in self.acks, timeout, f"an ack for {envelope_id}")
        with self._lock:
            return self.acks[envelope_id]

    def _serve(self, connection: ServerConnection) -> None:
        connection.send(json.dumps({"type": "hello", "num_connections": 1,
                                    "connection_info": {"app_id": "A0BOT"}}))
        with self._lock:
            self._connections.append(connection)
        try:
            for message in connection:
                ack = json.loads(message)
                with self._lock:
                    self.acks[ack["envelope_id"]] = ack.get("payload") or {}
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._connections.remove(connection)
