"""`doctor` shows where it looked, never a credential kept in a URL."""

from __future__ import annotations

import io

from bot.cli import doctor
from bot.exotel.sandbox import ExotelSandbox
from testkit.slack import FakeSlack
from tests.support import settings_for


def test_safe_url_hides_userinfo_and_secret_parameters() -> None:
    assert doctor.safe_url("redis://:hunter2@host/0?password=x") == "redis://:***@host/0?password=***"
    assert doctor.safe_url("https://user:pw@host") == "https://user:***@host"
    assert doctor.safe_url("https://tok3n@host/api") == "https://***@host/api"
    assert doctor.safe_url("https://slack.example/api/?token=xoxb-1&team=T1&api%5Fkey=k&x") == \
        "https://slack.example/api/?token=***&team=T1&api%5Fkey=***&x"
    assert doctor.safe_url("redis://u:p4ss@h:6380/1") == "redis://u:***@h:6380/1"
    assert doctor.safe_url("https://api.exotel.com") == "https://api.exotel.com"
    assert doctor.safe_url("redis://:pw@host:notaport/0") == "redis://:***@host:notaport/0"


def test_mask_urls_finds_them_in_any_line() -> None:
    line = "✗ slack: could not reach Slack at https://u:pw@h/api/?token=t0k (refused)"
    assert doctor.mask_urls(line) == \
        "✗ slack: could not reach Slack at https://u:***@h/api/?token=*** (refused)"


def test_the_doctor_prints_no_credential_from_a_url(
    redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    host_port = redis_url.removeprefix("redis://").split("/")[0]
    settings = settings_for(
        redis_url, exotel, slack,
        REDIS_URL=f"redis://:hunter2@{host_port}/0?password=x",
        EXOTEL_BASE_URL=exotel.url.replace("://", "://user:pw-exotel@"),
        SLACK_API_URL="http://127.0.0.1:9/api/?token=slack-url-token",  # unreachable: printed
    )
    out = io.StringIO()
    doctor.run_doctor(settings, out)
    printed = out.getvalue()
    assert "127.0.0.1:9/api/?token=***" in printed  # it does say where it looked
    for secret in ("hunter2", "password=x", "pw-exotel", "slack-url-token"):
        assert secret not in printed, printed
