"""bot/exotel.py's client against real HTTP servers, and the Redis rate limiter it shares."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from bot.domain import ratelimit
from bot.domain.ratelimit import WINDOW_SECONDS, SharedRateLimiter
from bot.exotel.client import (
    MAX_ATTEMPTS,
    MIN_ATTEMPT_SECONDS,
    ExotelAuthError,
    ExotelBadRequest,
    ExotelBadResponse,
    ExotelClient,
    ExotelNotFound,
    ExotelPlanError,
    ExotelRateLimited,
    ExotelTimeout,
    ExotelUnavailable,
    RateLimitExceeded,
)
from bot.exotel.sandbox import LINK_BASE, ExotelSandbox, Fault
from testkit.env import EXOTEL_KEY, EXOTEL_SID, EXOTEL_TOKEN
from tests.support import FakeClock, NoLimit

TOKEN = "0b7c6a1e-3f2d-4c55-9e8a-1d2b3c4d5e6f"
LINK = f"{LINK_BASE}{TOKEN}"


def client_for(url: str, timeout: float = 2, deadline: float = 6,
               clock: FakeClock | None = None) -> ExotelClient:
    clock = clock or FakeClock()
    return ExotelClient(base_url=url, account_sid=EXOTEL_SID, api_key=EXOTEL_KEY,
                        api_token=EXOTEL_TOKEN, limiter=NoLimit(), timeout=timeout,
                        deadline=deadline, clock=clock, sleep=clock.sleep)


def isv(**inner: Any) -> dict[str, Any]:
    """A v2 body: the fields of response.whatsapp.isv."""
    return {"http_code": 200, "response": {"whatsapp": {"isv": inner}}}


class Canned:
    """A tiny HTTP server that gives every request the same status, body and headers."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = {}
        canned = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = canned.body
                raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(canned.status)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, status: int, body: Any, deadline: float = 6) -> ExotelClient:
        """Answer every request with this; return a client pointed here."""
        self.status, self.body = status, body
        return client_for(self.url, deadline=deadline)


@pytest.fixture(scope="module")
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.server.shutdown()
    server.server.server_close()


# --- against the sandbox --------------------------------------------------------------------

def test_creates_a_link_the_sandbox_knows(exotel: ExotelSandbox) -> None:
    link = client_for(exotel.url).create_link()
    assert link.url == LINK_BASE + link.token
    assert exotel.status(link.token) == "VALID"


def test_token_status_and_unknown_token(exotel: ExotelSandbox) -> None:
    client = client_for(exotel.url)
    link = client.create_link()
    assert client.token_status(link.token) == "VALID"
    exotel.onboard(link.token, customers=5)
    assert client.token_status(link.token) == "USED"
    with pytest.raises(ExotelNotFound, match="copied whole"):
        client.token_status("no-such-token")


def test_credentials_go_in_the_authorization_header_never_the_url(exotel: ExotelSandbox) -> None:
    client = client_for(exotel.url)
    client.token_status(client.create_link().token)
    basic = base64.b64encode(f"{EXOTEL_KEY}:{EXOTEL_TOKEN}".encode()).decode()
    assert [c.method for c in exotel.calls] == ["POST", "GET"]
    for call in exotel.calls:
        assert call.authorization == f"Basic {basic}"
        where = call.path + json.dumps(call.query)
        for secret in (EXOTEL_KEY, EXOTEL_TOKEN, basic):
            assert secret not in where


def test_wrong_credentials_are_an_auth_error_and_not_retried(exotel: ExotelSandbox) -> None:
    client = ExotelClient(base_url=exotel.url, account_sid=EXOTEL_SID, api_key=EXOTEL_KEY,
                          api_token="wrong", limiter=NoLimit())
    with pytest.raises(ExotelAuthError, match="EXOTEL_API_TOKEN") as caught:
        client.create_link()
    assert caught.value.http_status == 401
    assert len(exotel.calls) == 1


def test_unknown_account_is_not_found(exotel: ExotelSandbox) -> None:
    client = ExotelClient(base_url=exotel.url, account_sid="other", api_key=EXOTEL_KEY,
                          api_token=EXOTEL_TOKEN, limiter=NoLimit())
    with pytest.raises(ExotelNotFound, match="EXOTEL_ACCOUNT_SID"):
        client.create_link()


def test_429_is_retried_after_retry_after(exotel: ExotelSandbox) -> None:
    exotel.faults.append(Fault(status=429, retry_after="1"))
    clock = FakeClock()
    link = client_for(exotel.url, clock=clock).create_link()
    assert len(exotel.calls_of("POST")) == 2
    assert exotel.status(link.token) == "VALID"
    assert clock.sleeps == [1.0]  # what Exotel asked for, not the backoff's own pause


def test_a_long_retry_after_fails_at_once_instead_of_past_the_deadline(
        exotel: ExotelSandbox) -> None:
    exotel.always = Fault(status=429, retry_after="120")
    clock = FakeClock()
    with pytest.raises(ExotelRateLimited, match="HTTP 429"):
        client_for(exotel.url, deadline=3, clock=clock).create_link()
    assert clock.sleeps == []
    assert len(exotel.calls) == 1


def test_500_is_retried_with_backoff_until_the_deadline(exotel: ExotelSandbox) -> None:
    exotel.always = Fault(status=500)
    clock = FakeClock()
    with pytest.raises(ExotelUnavailable, match="HTTP 500"):
        client_for(exotel.url, deadline=6, clock=clock).create_link()
    # Exponential backoff from 1 s (jitter up to 0.5 s), stopped before a start too late
    # to finish by the deadline: three calls, two pauses, all within the six seconds.
    assert len(exotel.calls) == 3
    first, second = clock.sleeps
    assert 1 <= first <= 1.5 and 2 <= second <= 2.5
    assert clock.elapsed <= 6 - MIN_ATTEMPT_SECONDS


def test_retries_stop_at_five_attempts_however_long_the_deadline(
        exotel: ExotelSandbox) -> None:
    exotel.always = Fault(status=503)
    clock = FakeClock()
    with pytest.raises(ExotelUnavailable):
        client_for(exotel.url, deadline=600, clock=clock).create_link()
    assert len(exotel.calls) == MAX_ATTEMPTS and len(clock.sleeps) == MAX_ATTEMPTS - 1


def test_a_slow_post_is_not_repeated_but_a_slow_read_is(exotel: ExotelSandbox) -> None:
    exotel.always = Fault(passthrough=True, delay=5)
    clock = FakeClock()
    client = client_for(exotel.url, timeout=0.3, deadline=3, clock=clock)
    with pytest.raises(ExotelTimeout, match="did not answer in time"):
        client.create_link()
    assert len(exotel.calls_of("POST")) == 1  # it may have made a link: never send it twice
    assert clock.sleeps == []

    with pytest.raises(ExotelTimeout):
        client.token_status(TOKEN)
    assert len(exotel.calls_of("GET")) == 2  # a read is harmless to repeat, until the deadline
    assert len(clock.sleeps) == 1


def test_create_links_reports_each_failure_beside_the_links(exotel: ExotelSandbox) -> None:
    exotel.faults.append(Fault(status=402))
    outcome = client_for(exotel.url).create_links(5)
    assert len({link.token for link in outcome.links}) == 4
    assert [type(e) for e in outcome.errors] == [ExotelPlanError]
    assert all(exotel.status(link.token) == "VALID" for link in outcome.links)


# --- parsing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["onboarding_url", "url", "Url"])
def test_the_link_may_come_under_any_documented_key(canned: Canned, key: str) -> None:
    link = canned.answer(200, isv(status="success", code=200, data={key: LINK})).create_link()
    assert (link.url, link.token) == (LINK, TOKEN)


def test_a_link_at_the_top_of_response_is_accepted(canned: Canned) -> None:
    body = {"response": {"status": "success", "code": 200, "data": {"url": LINK}}}
    assert canned.answer(200, body).create_link().token == TOKEN


@pytest.mark.parametrize("data", [
    {}, {"link": LINK}, {"url": ""}, {"url": 42}, {"url": "https://messaging.exotel.com/"},
    {"url": f"{LINK} <!channel>"},
])
def test_an_answer_without_a_usable_link_is_a_bad_response(canned: Canned, data: Any) -> None:
    with pytest.raises(ExotelBadResponse, match="onboarding link"):
        canned.answer(200, isv(status="success", code=200, data=data)).create_link()


@pytest.mark.parametrize("body", ["<html>oops</html>", "[1, 2]", ""])
def test_a_200_that_is_not_a_json_object_is_a_bad_response(canned: Canned, body: str) -> None:
    with pytest.raises(ExotelBadResponse, match="not JSON"):
        canned.answer(200, body).create_link()


def test_v1_rest_exception_message_is_surfaced(canned: Canned) -> None:
    body = {"RestException": {"Status": 400, "Message": "Invalid parameter: Channel"}}
    with pytest.raises(ExotelBadRequest, match=r"HTTP 400.*Invalid parameter: Channel"):
        canned.answer(400, body).create_link()


def test_v2_error_data_is_surfaced(canned: Canned) -> None:
    body = isv(status="failure", code=402, data=None, error_data={
        "code": 4020, "message": "Payment required", "description": "Monthly quota used up"})
    with pytest.raises(ExotelPlanError) as caught:
        canned.answer(402, body).create_link()
    text = str(caught.value)
    assert "plan" in text and "Payment required" in text and "Monthly quota used up" in text


def test_long_error_detail_is_cut_short(canned: Canned) -> None:
    body = isv(status="failure", code=500, error_data={"message": "x" * 5000})
    with pytest.raises(ExotelUnavailable) as caught:
        canned.answer(500, body, deadline=1).create_link()
    assert "xxxx" in str(caught.value) and len(str(caught.value)) < 400


@pytest.mark.parametrize(("code", "error"), [
    (401, ExotelAuthError), (402, ExotelPlanError), (400, ExotelBadRequest),
    (503, ExotelUnavailable),
])
def test_a_200_carrying_an_inner_failure_takes_the_inner_code(
        canned: Canned, code: int, error: type[Exception]) -> None:
    body = isv(status="failure", code=code, data=None,
               error_data={"message": "inner problem", "description": ""})
    with pytest.raises(error) as caught:
        canned.answer(200, body, deadline=1).create_link()  # 503 is retried: keep it short
    assert caught.value.http_status == code


def test_token_status_without_a_status_is_a_bad_response(canned: Canned) -> None:
    with pytest.raises(ExotelBadResponse, match="status"):
        canned.answer(200, isv(status="success", code=200, data={})).token_status(TOKEN)


def test_token_status_is_upper_cased(canned: Canned) -> None:
    body = isv(status="success", code=200, data={"onboarding_token_status": "expired"})
    assert canned.answer(200, body).token_status(TOKEN) == "EXPIRED"


# --- the shared rate limiter -----------------------------------------------------------------

def test_limiter_lets_five_through_then_refuses_the_sixth(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(
        time=time.time, monotonic=time.monotonic, sleep=slept.append))
    limiter = SharedRateLimiter(redis_client, per_minute=5, key="exotel:test")
    for _ in range(5):
        limiter.acquire(time.monotonic() + 0.2)
    with pytest.raises(RateLimitExceeded) as caught:
        limiter.acquire(time.monotonic() + 0.2)
    assert slept == []  # refused at once, not after waiting a window out
    assert 50 < caught.value.retry_in <= WINDOW_SECONDS


def test_two_limiters_share_one_budget(redis_url: str, redis_client: redis.Redis) -> None:
    from bot.domain.store import connect

    one = SharedRateLimiter(redis_client, per_minute=5, key="exotel:shared")
    two = SharedRateLimiter(connect(redis_url), per_minute=5, key="exotel:shared")
    for limiter in (one, two, one, two, one):
        limiter.acquire(time.monotonic() + 0.2)
    for limiter in (one, two):
        with pytest.raises(RateLimitExceeded):
            limiter.acquire(time.monotonic() + 0.2)
    SharedRateLimiter(redis_client, per_minute=5, key="exotel:other").acquire(
        time.monotonic() + 0.2)  # another account's budget is its own
