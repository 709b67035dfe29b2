"""What each process counts, read back from prometheus_client's registry."""

from __future__ import annotations

from prometheus_client import REGISTRY

from bot.telemetry.metrics import Metrics


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_slack_requests_are_counted_by_a_bounded_kind() -> None:
    before = {kind: value("onboard_slack_requests_total", kind=kind)
              for kind in ("/check-token", "other", "/anything")}
    Metrics().slack_request("/check-token")
    Metrics().slack_request("/anything")  # a name Slack never sends us stays out of the labels
    assert value("onboard_slack_requests_total", kind="/check-token") == \
        before["/check-token"] + 1
    assert value("onboard_slack_requests_total", kind="other") == before["other"] + 1
    assert value("onboard_slack_requests_total", kind="/anything") == 0


def test_each_metric_moves_by_what_it_is_told() -> None:
    metrics = Metrics()
    links = value("onboard_links_issued_total")
    failed = value("onboard_commands_total", command="check_token", outcome="failed")
    late = value("onboard_reminders_total", outcome="late")
    slow = value("onboard_exotel_request_seconds_bucket", method="GET", outcome="200", le="2.5")
    fast = value("onboard_exotel_request_seconds_bucket", method="GET", outcome="200", le="1.0")
    metrics.links_issued(3)
    metrics.command("check_token", "failed")
    metrics.reminder("late")
    metrics.exotel_call("GET", "200", 1.7)
    assert value("onboard_links_issued_total") == links + 3
    assert value("onboard_commands_total", command="check_token", outcome="failed") == failed + 1
    assert value("onboard_reminders_total", outcome="late") == late + 1
    assert value("onboard_exotel_request_seconds_bucket", method="GET", outcome="200",
                 le="2.5") == slow + 1
    assert value("onboard_exotel_request_seconds_bucket", method="GET", outcome="200",
                 le="1.0") == fast
