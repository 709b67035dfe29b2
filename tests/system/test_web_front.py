"""The web front as it runs in production (`python -m bot web`: gunicorn, uvicorn workers,
a2wsgi): slow and huge requests exhaust nothing, malformed ones get a 4xx and leave no
traceback, and nothing a stranger sends reaches the log."""

from __future__ import annotations

import contextlib
import gzip
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bot.exotel.sandbox import ExotelSandbox
from bot.runtime.server import gunicorn_options
from bot.settings import load_settings
from testkit.env import bot_env
from testkit.processes import BotProcess, children_of
from testkit.signed import command_body, sign
from testkit.slack import FakeSlack

MB = 1 << 20
TOKEN = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
LINK = f"https://messaging.exotel.com/ua-links/isv-onboard/{TOKEN}"


@pytest.fixture(scope="module")
def web(redis_url: str, _exotel_server: ExotelSandbox, _slack_server: FakeSlack,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotProcess]:
    home = tmp_path_factory.mktemp("home")  # where gunicorn would put its control socket
    env = bot_env(_exotel_server, _slack_server, REDIS_URL=redis_url, HOME=str(home))
    bot = BotProcess(env, "web").start()
    try:
        yield bot
    finally:
        bot.stop()


def _raw(bot: BotProcess, head: str, body: bytes = b"", timeout: float = 10) -> int:
    """Send one request as bytes and return the status code of its answer."""
    with socket.create_connection(("127.0.0.1", bot.port), timeout=timeout) as conn:
        conn.sendall(head.encode("latin-1") + b"\r\n" + body)
        return _status(conn)


def _status(conn: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = conn.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed with no answer: {answer!r}")
        answer += chunk
    return int(answer.split()[1])


def _head(headers: dict[str, str], **more: str) -> str:
    lines = ["POST /slack/events HTTP/1.1", "Host: bot", *(f"{k}: {v}" for k, v in
                                                          {**headers, **more}.items())]
    return "\r\n".join(lines) + "\r\n"


def _log_growth(bot: BotProcess, action) -> tuple[object, str]:
    before = len(bot.output())
    result = action()
    time.sleep(0.5)  # let the bot write whatever it would about it
    return result, bot.output()[before:]


# Acceptance 1 -------------------------------------------------------------------------------

class SlowClients:
    """`count` connections that send a request's headers (Content-Length 100000), then one
    byte of body every `interval` seconds, for `hold` seconds."""

    def __init__(self, port: int, count: int = 100, interval: float = 3.0,
                 hold: float = 15.0) -> None:
        head = _head({"Content-Type": "application/x-www-form-urlencoded",
                      "Content-Length": "100000"})
        self.conns = [socket.create_connection(("127.0.0.1", port), timeout=5)
                      for _ in range(count)]
        for conn in self.conns:
            conn.sendall(head.encode() + b"\r\n")
        self.interval, self.hold = interval, hold
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while time.monotonic() - self.started < self.hold:
            for conn in self.conns:
                with contextlib.suppress(OSError):  # once the server has cut it off
                    conn.sendall(b"x")
            time.sleep(self.interval)

    def unanswered(self) -> int:
        """How many connections have had no answer (nor been closed) so far."""
        poller = select.poll()
        for conn in self.conns:
            poller.register(conn, select.POLLIN)
        return len(self.conns) - len(poller.poll(0))

    def answers(self) -> list[int | None]:
        self.thread.join()
        statuses: list[int | None] = []
        for conn in self.conns:
            try:
                statuses.append(_status(conn))
            except (OSError, AssertionError):
                statuses.append(None)
            conn.close()
        return statuses


@pytest.mark.slow
def test_slow_clients_do_not_hold_up_acks(web: BotProcess, slack: FakeSlack) -> None:
    slow = SlowClients(web.port)
    time.sleep(0.5)  # the server has taken in every slow connection's headers
    for i in range(10):
        name = uuid.uuid4().hex
        body = command_body("/onboard-link", f"1 slow-client test {i}", slack.response_url(name))
        ack = requests.post(f"{web.url}/slack/events", data=body.encode(), headers=sign(body),
                            timeout=10)
        assert ack.status_code == 200 and "Creating" in ack.text
        # Acked while all hundred were still held open, their bodies half sent: not one
        # of them had been answered (or cut off) to make room for this request.
        assert slow.unanswered() == len(slow.conns)
    # Their bodies never came whole: each was cut off at the body deadline (408).
    assert set(slow.answers()) == {408}


# Acceptance 2 -------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_10_mb_unsigned_body_is_refused_unread(web: BotProcess) -> None:
    def send() -> int:
        with socket.create_connection(("127.0.0.1", web.port), timeout=10) as conn:
            head = _head({"Content-Type": "application/x-www-form-urlencoded",
                          "Content-Length": str(10 * MB)})
            conn.sendall(head.encode() + b"\r\n")
            # The server answers without reading: the body may meet a closed socket.
            with contextlib.suppress(OSError):
                conn.sendall(b"text=" + b"A" * (10 * MB - 5))
            return _status(conn)

    status, log = _log_growth(web, send)
    assert status == 413
    assert len(log) < 10_000, log[:500]


@pytest.mark.slow
def test_a_chunked_body_is_cut_at_1_mb(web: BotProcess) -> None:
    def send() -> int:
        with socket.create_connection(("127.0.0.1", web.port), timeout=10) as conn:
            head = _head({"Content-Type": "application/x-www-form-urlencoded",
                          "Transfer-Encoding": "chunked"})
            conn.sendall(head.encode() + b"\r\n")
            chunk = b"A" * 65536
            with contextlib.suppress(OSError):
                for _ in range(10 * MB // len(chunk)):
                    conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                conn.sendall(b"0\r\n\r\n")
            return _status(conn)

    status, log = _log_growth(web, send)
    assert status == 413
    assert len(log) < 10_000, log[:500]


@pytest.mark.slow
def test_huge_headers_are_refused_unbuffered(web: BotProcess) -> None:
    assert web.proc is not None
    [worker] = children_of(web.proc.pid)  # WEB_CONCURRENCY=1
    memory = _rss(worker)
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as conn:
        conn.sendall(b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nX-Big: ")
        with contextlib.suppress(OSError):
            for _ in range(50):
                conn.sendall(b"a" * MB)
        assert _status(conn) == 400
    assert _rss(worker) - memory < 20 * MB


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


@pytest.mark.slow
def test_a_signed_body_just_under_1_mb_is_served(web: BotProcess, slack: FakeSlack) -> None:
    body = command_body("/onboard-link", "help " + "x" * (MB - 300), slack.response_url("big"))
    assert MB - 1000 < len(body) <= MB
    response = requests.post(f"{web.url}/slack/events", data=body.encode(), headers=sign(body),
                             timeout=10)
    assert response.status_code == 200


@pytest.mark.slow
def test_an_unsigned_body_under_the_limit_is_not_logged(web: BotProcess) -> None:
    marker = "logged-body-marker"
    body = f"text={marker}+{LINK}&pad={'B' * 900_000}"
    response, log = _log_growth(web, lambda: requests.post(
        f"{web.url}/slack/events", data=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10))
    assert response.status_code == 401
    assert marker not in log and TOKEN not in log and len(log) < 10_000


# Acceptance 3 -------------------------------------------------------------------------------

def _signed(body: bytes, content_type: str = "application/x-www-form-urlencoded",
            timestamp: str | None = None) -> dict[str, str]:
    """Headers signed over `body` as bytes (sign() takes text)."""
    import hashlib
    import hmac

    from testkit.env import SIGNING_SECRET

    ts = timestamp or str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), f"v0:{ts}:".encode() + body,
                      hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": content_type}


def malformed(response_url: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    command = command_body("/onboard-link", "1 ACME", response_url).encode()
    deep = b"[" * 100_000 + b"]" * 100_000
    cases = {
        "non-UTF-8, signed": (b"text=\xff\xfe&command=%2Fonboard-link", None),
        "non-UTF-8, unsigned": (b"text=\xff\xfe", {"Content-Type": "text/plain"}),
        "gzip, signed": (gzip.compress(command), None),
        "invalid JSON, signed": (b'{"type": "event_callback",', "application/json"),
        "payload=junk, signed": (b"payload=junk", None),
        "payload=[], signed": (b"payload=%5B%5D", None),
        "deep JSON nesting, signed": (deep, "application/json"),
        "deep nesting in payload, signed": (b"payload=" + deep, None),
        "JSON array, signed": (b"[1, 2]", "application/json"),
        "missing signature": (command, {"X-Slack-Request-Timestamp": str(int(time.time()))}),
        "no headers at all": (command, {}),
        "non-numeric timestamp": (command, {"X-Slack-Request-Timestamp": "soon",
                                            "X-Slack-Signature": "v0=00"}),
    }
    out = {}
    for name, (body, spec) in cases.items():
        if spec is None or isinstance(spec, str):
            headers = _signed(body, spec or "application/x-www-form-urlencoded")
        else:
            headers = spec
        if name.startswith("gzip"):
            headers["Content-Encoding"] = "gzip"
        out[name] = (body, headers)
    # Signed over the exact non-numeric timestamp: the signature is right, the time is not.
    out["non-numeric timestamp, signed"] = (command, _signed(command, timestamp="12ab"))
    return out


@pytest.mark.slow
def test_malformed_requests_get_a_4xx_and_leave_no_traceback(
    web: BotProcess, slack: FakeSlack
) -> None:
    before = len(web.output())
    statuses = {}
    for name, (body, headers) in malformed(slack.response_url("malformed")).items():
        statuses[name] = requests.post(f"{web.url}/slack/events", data=body, headers=headers,
                                       timeout=10).status_code
    assert all(status in (400, 401) for status in statuses.values()), statuses
    # Signed but unreadable: refused as malformed, after the signature was checked.
    for name in ("payload=junk, signed", "invalid JSON, signed", "deep JSON nesting, signed",
                 "gzip, signed", "JSON array, signed"):
        assert statuses[name] == 400, name
    # Malformed HTTP itself is httptools' to refuse.
    assert _raw(web, _head({"Content-Length": "12x"})) == 400
    time.sleep(0.5)
    log = web.output()[before:]
    assert "Traceback" not in log and "Error" not in log, log[:2000]
    assert slack.replies("malformed") == []


# Acceptance 6 (the web half) ----------------------------------------------------------------

@pytest.mark.slow
def test_a_check_with_a_bad_signature_logs_no_token(web: BotProcess, slack: FakeSlack) -> None:
    body = command_body("/check-token", LINK, slack.response_url("badsig"))
    response = requests.post(f"{web.url}/slack/events", data=body.encode(),
                             headers=sign(body, secret="not-the-signing-secret"), timeout=10)
    time.sleep(0.5)
    assert response.status_code == 401
    assert TOKEN not in web.output() and TOKEN.replace("-", "") not in web.output()


# gunicorn's control socket --------------------------------------------------------------------

@pytest.mark.slow
def test_gunicorn_opens_no_control_socket(web: BotProcess) -> None:
    assert requests.get(f"{web.url}/healthz", timeout=5).status_code == 200
    assert not (Path(web.env["HOME"]) / ".gunicorn").exists()
    settings = load_settings(_env_file=None, SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="s",
                             EXOTEL_API_KEY="k", EXOTEL_API_TOKEN="t", EXOTEL_ACCOUNT_SID="a")
    assert gunicorn_options(settings)["control_socket_disable"] is True


@pytest.mark.slow
def test_no_full_token_in_the_log_after_forgetting_twice_and_an_unknown_check(
    web: BotProcess, slack: FakeSlack
) -> None:
    import re

    def command(name: str, text: str) -> dict:
        body = command_body(name, text, slack.response_url(name_ := uuid.uuid4().hex))
        assert requests.post(f"{web.url}/slack/events", data=body.encode(), headers=sign(body),
                             timeout=10).status_code == 200
        return slack.wait_for_replies(name_)[0]

    worker = BotProcess(web.env, "worker").start()  # the commands' work is done there
    try:
        issued = json.dumps(command("/onboard-link", f"1 Token Co {uuid.uuid4().hex[:6]}"))
        [token] = set(re.findall(r"isv-onboard/([0-9a-f-]{36})", issued))
        link = f"https://messaging.exotel.com/ua-links/isv-onboard/{token}"
        command("/onboard-link", f"forget {link}")
        command("/onboard-link", f"forget {link}")
        command("/check-token", str(uuid.uuid4()))
        command("/check-token", f"<{link}>")
    finally:
        worker.stop()
    full = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    output = web.output() + worker.output()
    leaks = [line for line in output.splitlines() if full.search(line)]
    assert not leaks, leaks
    assert f"…{token[-4:]}" in output  # the log does speak of it, masked
