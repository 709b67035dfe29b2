"""`/onboard-link report [days]` without Redis or Slack: the parsing, the summary, the CSV and
the Block Kit summary at its largest."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk.models.blocks import Block

from bot.domain.history import CSV_FIELDS, LinkRecord, summarise, to_csv
from bot.slack import messages
from bot.slack.command_text import ReportRequest, parse_onboard
from bot.slack.inputs import MAX_NOTE, MAX_REF, UsageError
from tests.blockkit import assert_inert, assert_within_slack_limits, block_text, blocks_of

AT = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def record(rep: str = "U0REP", note: str = "ACME", ref: str = "", *, ago: timedelta = DAY,
           used_after: timedelta | None = None, last4: str = "ab12") -> LinkRecord:
    issued = AT - ago
    return LinkRecord(issued_at=issued, requested_by=rep, customer_note=note, customer_ref=ref,
                      token_last4=last4, status="VALID",
                      used_at=issued + used_after if used_after else None,
                      expires_at=issued + DAY)


@pytest.mark.parametrize(("text", "days"), [("report", 7), ("REPORT 1", 1), ("report 90", 90)])
def test_report_takes_1_to_the_retention_days_7_by_default(text: str, days: int) -> None:
    assert parse_onboard(text) == ReportRequest(days)


@pytest.mark.parametrize("days", ["0", "400", "x", "-3", "7.5", "91", "1 2"])
def test_other_days_are_refused_saying_what_is_allowed(days: str) -> None:
    with pytest.raises(UsageError, match=r"1 to 90 days"):
        parse_onboard(f"report {days}")


def test_the_most_days_is_the_retention_given() -> None:
    assert parse_onboard("report 30", report_days=30) == ReportRequest(30)
    assert parse_onboard("report", report_days=3) == ReportRequest(3)
    with pytest.raises(UsageError, match=r"1 to 30 days"):
        parse_onboard("report 31", report_days=30)


def test_the_summary_counts_per_rep_and_lists_customers_whose_links_expired_unused() -> None:
    records = [
        record("U0A", "Used Co", used_after=timedelta(minutes=10), ago=3 * DAY),
        record("U0A", "Used Co", used_after=timedelta(minutes=30), ago=3 * DAY),
        record("U0A", "Lapsed Co", "crm-1", ago=2 * DAY),
        record("U0A", "lapsed co ", "CRM-1", ago=2 * DAY),  # the same customer
        record("U0B", "Live Co", ago=timedelta(hours=1)),  # still live: not expired
        record("U0B", "Mixed Co", ago=2 * DAY),  # expired, but its other link was used:
        record("U0B", "Mixed Co", ago=2 * DAY, used_after=timedelta(hours=2)),  # no follow up
    ]
    summary = summarise(records, AT)
    by_rep = {rep.rep: rep for rep in summary.reps}
    assert (by_rep["U0A"].issued, by_rep["U0A"].used, by_rep["U0A"].expired) == (4, 2, 2)
    assert by_rep["U0A"].median_to_used == timedelta(minutes=20)
    assert (by_rep["U0B"].issued, by_rep["U0B"].used, by_rep["U0B"].expired) == (3, 1, 1)
    assert [(f.note, f.ref, f.rep) for f in summary.follow_up] == [("Lapsed Co", "crm-1", "U0A")]
    assert summary.issued == 7


def test_the_csv_has_one_row_per_link_and_quotes_what_a_spreadsheet_would_compute() -> None:
    records = [record(note="=HYPERLINK(\"http://x\")", ref="+1 555", last4="-9ab"),
               record(note="@SUM(A1)", ref="ok, \"quoted\"", used_after=timedelta(hours=1)),
               record(note="Plain, with a comma", ago=timedelta(hours=2))]
    rows = list(csv.reader(io.StringIO(to_csv(records, AT))))
    assert rows[0] == CSV_FIELDS
    assert len(rows) == 4
    first, second, third = (dict(zip(CSV_FIELDS, row, strict=True)) for row in rows[1:])
    assert first["customer_note"] == "'=HYPERLINK(\"http://x\")"
    assert first["customer_ref"] == "'+1 555" and first["token_last4"] == "'-9ab"
    assert first["status"] == "EXPIRED" and first["used_at"] == ""
    assert second["customer_note"] == "'@SUM(A1)" and second["customer_ref"] == "ok, \"quoted\""
    assert second["status"] == "USED" and second["used_at"] == "2026-12-07T10:00:00Z"
    assert third["customer_note"] == "Plain, with a comma" and third["status"] == "VALID"
    assert third["issued_at"] == "2026-12-08T07:00:00Z"
    assert third["expires_at"] == "2026-12-09T07:00:00Z"


def test_the_largest_summary_stays_within_slacks_limits_and_its_user_text_inert() -> None:
    hostile = "<!channel> *bold* <https://evil.example|click> &" * 20
    records = [record(f"U0REP{n:03d}", (hostile + str(n))[:MAX_NOTE],
                      (hostile + str(n))[:MAX_REF], ago=2 * DAY)
               for n in range(60)]
    message = messages.report(summarise(records, AT), 90, True, "the CSV is in your DMs")
    assert_within_slack_limits(message)
    assert_inert(message, "<!channel>", "<https://evil.example")
    for block in blocks_of(message):  # slack_sdk's own models accept each block
        parsed = Block.parse(block)
        assert parsed is not None and parsed.to_dict() == block
    text = block_text(message)
    assert "…and 40 more reps: see the CSV." in text
    assert "…and 40 more: see the CSV." in text
    assert "the CSV is in your DMs" in text


def test_an_empty_period_says_so() -> None:
    message = messages.report(summarise([], AT), 1, False, "")
    assert "No links issued in the last day (your links)." in block_text(message)
