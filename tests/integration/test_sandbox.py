"""The Exotel sandbox: Exotel's documented semantics, its mark-used endpoint, and
`python -m bot sandbox` as an operator runs it."""

from __future__ import annotations

from datetime import timedelta

import requests
from freezegun import freeze_time

from bot.exotel.sandbox import CONTROL_PREFIX, LINK_BASE, ExotelSandbox, Fault
from testkit.env import EXOTEL_KEY, EXOTEL_TOKEN
from tests.support import START, isv, mark

AUTH = (EXOTEL_KEY, EXOTEL_TOKEN)
# HTTP calls under a frozen clock: urllib3's timeouts need the real one.
REAL_CLOCK = ["urllib3"]


def api(exotel: ExotelSandbox) -> str:
    return f"{exotel.url}/v2/accounts/{exotel.account_sid}/isv"


def issue(exotel: ExotelSandbox) -> str:
    created = requests.post(api(exotel), auth=AUTH, timeout=5)
    assert created.status_code == 200
    url = isv(created)["data"]["onboarding_url"]
    assert url.startswith(LINK_BASE)
    return url.removeprefix(LINK_BASE)


def status(exotel: ExotelSandbox, token: str) -> str:
    answer = requests.get(api(exotel), params={"access_token": token}, auth=AUTH, timeout=5)
    assert answer.status_code == 200, answer.text
    return isv(answer)["data"]["onboarding_token_status"]


# Exotel's semantics --------------------------------------------------------------------


def test_a_token_is_valid_when_issued_and_used_after_five_onboardings(
    exotel: ExotelSandbox,
) -> None:
    with freeze_time(START, ignore=REAL_CLOCK):
        token = issue(exotel)
        assert status(exotel, token) == "VALID"
        exotel.onboard(token, customers=4)
        assert status(exotel, token) == "VALID"
        exotel.onboard(token)
        assert status(exotel, token) == "USED"


def test_a_token_expires_24_hours_after_it_was_issued(exotel: ExotelSandbox) -> None:
    with freeze_time(START, ignore=REAL_CLOCK) as clock:
        token = issue(exotel)
        clock.tick(timedelta(hours=23, minutes=59, seconds=59))
        assert status(exotel, token) == "VALID"
        clock.tick(timedelta(seconds=1))
        assert status(exotel, token) == "EXPIRED"


def test_a_wrong_key_gets_a_v2_error(exotel: ExotelSandbox) -> None:
    answer = requests.post(api(exotel), auth=("wrong-key", EXOTEL_TOKEN), timeout=5)
    assert answer.status_code == 401
    body = answer.json()
    assert body["http_code"] == 401 and body["method"] == "POST"
    assert isv(answer) == {
        "code": 401, "status": "failure", "data": None,
        "error_data": {"code": 4010, "message": "Authentication failed",
                       "description": "Necessary credentials were either missing or invalid."},
    }
    assert exotel.tokens == {}


def test_an_unknown_token_gets_a_v2_not_found(exotel: ExotelSandbox) -> None:
    answer = requests.get(api(exotel), params={"access_token": "never-issued"}, auth=AUTH,
                          timeout=5)
    assert answer.status_code == 404
    error = isv(answer)
    assert error["status"] == "failure" and error["code"] == 404
    assert error["error_data"]["description"] == "Invalid access token"


# The mark-used endpoint ----------------------------------------------------------------


def test_marking_onboardings_over_http_answers_the_new_status(exotel: ExotelSandbox) -> None:
    token = issue(exotel)
    once = mark(exotel.url, token)
    assert once.status_code == 200
    assert once.json() == {"token": token, "onboardings": 1, "status": "VALID"}
    four_more = mark(exotel.url, token, 4)
    assert four_more.json() == {"token": token, "onboardings": 5, "status": "USED"}
    assert status(exotel, token) == "USED"


def test_the_mark_used_endpoint_is_not_exotels_api(exotel: ExotelSandbox) -> None:
    token = issue(exotel)
    calls_before = len(exotel.calls)
    exotel.always = Fault(status=500)  # Exotel's API failing does not touch the endpoint
    assert mark(exotel.url, token, 5).json()["status"] == "USED"
    assert len(exotel.calls) == calls_before


def test_the_mark_used_endpoint_refuses_what_it_cannot_do(exotel: ExotelSandbox) -> None:
    token = issue(exotel)
    assert mark(exotel.url, "never-issued").status_code == 404
    assert mark(exotel.url, token, 0).status_code == 400
    assert mark(exotel.url, token, "five").status_code == 400
    wrong_verb = requests.get(f"{exotel.url}{CONTROL_PREFIX}{token}/onboard", timeout=5)
    assert wrong_verb.status_code == 404
    assert "POST" in wrong_verb.json()["error"]
    # No authentication, so nobody but this machine may use it.
    refused = exotel._control("POST", f"{CONTROL_PREFIX}{token}/onboard", {}, "10.1.2.3")
    assert refused[0] == 403
    assert exotel.tokens[token].onboardings == 0


def test_replies_through_the_sandbox_say_so(bot) -> None:
    """The suite's fake Exotel is the sandbox, so the bot's replies are marked as such."""
    from tests.blockkit import block_text

    final = bot.command("/onboard-link", "1 ACME").final()
    assert final["text"].startswith("[sandbox]")
    assert "*Sandbox*" in block_text(final) and "not real" in block_text(final)
