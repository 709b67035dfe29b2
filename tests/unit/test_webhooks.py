"""Webhooks without I/O: the settings' checks (exit 2 with a hint), the signed headers as
standardwebhooks verifies them, the events' shape and ids, and the outcome of an answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time
from standardwebhooks import Webhook, WebhookVerificationError

from bot.__main__ import main
from bot.domain.events import link_data, link_event_id, make_event
from bot.domain.models import Requester, TrackedLink
from bot.settings import HINTS, SettingsError, load_settings
from bot.webhooks import sender
from testkit.receiver import SECRET

BASE = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "EXOTEL_API_KEY": "k",
        "EXOTEL_API_TOKEN": "t", "EXOTEL_ACCOUNT_SID": "acme1"}
TOKEN = "0f8fad5b-d9cb-469f-a165-70867728950e"


def settings(**values: str) -> Any:
    return load_settings(_env_file=None, **BASE, **values)


@pytest.mark.parametrize(("name", "values", "problem"), [
    ("WEBHOOK_URLS", {"WEBHOOK_URLS": "http://crm.example.com/hook", "WEBHOOK_SECRET": SECRET},
     "must start with https://"),
    ("WEBHOOK_URLS", {"WEBHOOK_URLS": "ftp://127.0.0.1/x", "WEBHOOK_SECRET": SECRET},
     "must start with https://"),
    ("WEBHOOK_SECRET", {"WEBHOOK_URLS": "https://crm.example.com/hook"}, "missing"),
    ("WEBHOOK_SECRET", {"WEBHOOK_SECRET": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "whsec_"),
    ("WEBHOOK_SECRET", {"WEBHOOK_SECRET": "whsec_not*base64"}, "base64"),
    ("WEBHOOK_SECRET", {"WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "holds 5 bytes"),
    ("WEBHOOK_RETRY_SCHEDULE", {"WEBHOOK_RETRY_SCHEDULE": "5s,tomorrow"}, "'tomorrow'"),
    ("WEBHOOK_RETRY_SCHEDULE", {"WEBHOOK_RETRY_SCHEDULE": "0s"}, "'0s'"),
])
def test_malformed_webhook_settings_are_refused_with_a_hint(
    name: str, values: dict[str, str], problem: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        settings(**values)
    line = next(li for li in str(refused.value).splitlines() if li.startswith(f"- {name}: "))
    assert problem in line and HINTS[name] in line
    assert SECRET not in str(refused.value)


def test_a_malformed_secret_stops_start_up_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in {**BASE, "WEBHOOK_URLS": "https://crm.example.com/h",
                       "WEBHOOK_SECRET": "whsec_c2hvcnQ="}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir("/")  # no .env here
    assert main(["jobs"]) == 2
    assert "- WEBHOOK_SECRET: " in capsys.readouterr().err


def test_good_webhook_settings_and_their_defaults() -> None:
    plain = settings()
    assert plain.webhook_urls == [] and plain.webhook_secret is None
    assert plain.webhook_retry_schedule == [5, 300, 1800, 7200, 18000, 36000, 36000]
    hooked = settings(WEBHOOK_URLS="https://a.example.com/h, http://127.0.0.1:8080/h,"
                                   "http://localhost/h", WEBHOOK_SECRET=SECRET,
                      WEBHOOK_RETRY_SCHEDULE="1s,2m,3h")
    assert hooked.webhook_urls == ["https://a.example.com/h", "http://127.0.0.1:8080/h",
                                   "http://localhost/h"]
    assert hooked.webhook_retry_schedule == [1, 120, 10800]
    assert SECRET in hooked.secrets()  # scrubbed from every log line


def test_signed_headers_verify_with_standardwebhooks_and_a_changed_byte_does_not() -> None:
    body = '{"type":"link.issued","data":{}}'
    headers = sender.signed_headers(SECRET, "msg_1", body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("issued", "used"), headers)
    with pytest.raises(WebhookVerificationError):  # another id: another signature
        Webhook(SECRET).verify(body, {**headers, "webhook-id": "msg_2"})
    old = sender.signed_headers(SECRET, "msg_1", body,
                                at=datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError):  # too old: a retry is signed afresh
        Webhook(SECRET).verify(body, old)


@pytest.mark.parametrize(("status", "delivered", "gone"), [
    (200, True, False), (204, True, False), (302, False, False), (410, False, True),
    (500, False, False)])
def test_only_a_2xx_answer_is_a_delivery(status: int, delivered: bool, gone: bool) -> None:
    calls: list[dict[str, Any]] = []

    class Answer:
        status_code = status

        def close(self) -> None:
            pass

    def post(url: str, **options: Any) -> Answer:
        calls.append(options)
        return Answer()

    outcome = sender.send("https://a.example.com/h", SECRET, "msg_1", "{}", post=post)
    assert (outcome.delivered, outcome.gone, str(outcome)) == (delivered, gone,
                                                                f"HTTP {status}")
    [options] = calls
    assert options["allow_redirects"] is False and options["timeout"] == 10
    assert options["headers"]["webhook-id"] == "msg_1"


def test_a_link_event_has_the_issues_fields_and_an_id_of_its_own() -> None:
    requester = Requester(team_id="T0A", user_id="U0A", channel_id="C0A")
    issued = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    link = TrackedLink(token=TOKEN, url=f"https://x.example/{TOKEN}", batch_id="b1",
                       requester=requester, note="ACME", issued_at=issued,
                       expires_at=issued + timedelta(hours=24))
    with freeze_time("2026-12-07 10:00:00"):
        event = make_event("link.used", link_data(link, "", "USED", False, issued),
                           link_event_id("link.used", TOKEN))
    body = json.loads(event.body)
    assert body == {"type": "link.used", "timestamp": "2026-12-07T10:00:00Z", "data": {
        "link": f"https://x.example/{TOKEN}", "token_last4": "950e", "batch_id": "b1",
        "customer_note": "ACME", "customer_ref": None, "requested_by": "U0A",
        "team_id": "T0A", "channel_id": "C0A", "issued_at": "2026-12-07T09:30:00Z",
        "expires_at": "2026-12-08T09:30:00Z", "status": "USED", "sandbox": False,
        "used_at": "2026-12-07T09:30:00Z"}}
    assert event.id == link_event_id("link.used", TOKEN) != link_event_id("link.issued", TOKEN)
    assert TOKEN not in event.id and event.id.startswith("msg_")
    assert make_event("webhook.test", {}).id != make_event("webhook.test", {}).id
