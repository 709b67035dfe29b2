"""`/onboard-link report [days]` end to end: the summary on the response URL, the CSV in the
requester's DM through Slack's external upload flow; and the per-link history under it."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import timedelta

import redis
from freezegun.api import FrozenDateTimeFactory

from bot.domain.history import KEPT_NOTE, KEPT_REF, summarise
from bot.domain.store import HISTORY_INDEX, HISTORY_LINK, link_id, now
from bot.exotel.sandbox import ExotelSandbox
from bot.slack import messages
from bot.slack.core import Core
from testkit.slack import FakeSlack
from tests.blockkit import LINK, assert_within_slack_limits, block_text
from tests.support import REP, Bot, mark

DAY = 24 * 3600
CSV_HEADER = ["issued_at", "requested_by", "customer_note", "customer_ref", "token_last4",
              "status", "used_at", "expires_at"]


def issue(bot: Bot, text: str, user: str = "U0REP") -> list[str]:
    """The tokens of `/onboard-link <text>` run by `user`."""
    final = bot.command("/onboard-link", text, user_id=user).final()
    tokens = LINK.findall(block_text(final))
    assert tokens, block_text(final)
    return tokens


def csv_rows(slack: FakeSlack) -> list[dict[str, str]]:
    [upload] = slack.shared_files()
    rows = list(csv.reader(io.StringIO(upload.text)))
    assert rows[0] == CSV_HEADER
    return [dict(zip(CSV_HEADER, row, strict=True)) for row in rows[1:]]


def test_report_7_answers_with_the_summary_and_uploads_a_csv_of_the_links_issued(
        bot: Bot, slack: FakeSlack, exotel: ExotelSandbox) -> None:
    """Acceptance 5."""
    acme = issue(bot, "2 ACME Corp ref:crm-42")
    used = issue(bot, "1 Globex")
    mark(exotel.url, used[0], 5)  # five customers onboarded: Exotel now says USED
    assert "USED" in block_text(bot.command("/check-token", used[0]).final())

    reply = bot.command("/onboard-link", "report 7")
    assert "Preparing your report" in block_text(reply.ack)
    final = reply.final()

    assert final["response_type"] == "ephemeral"
    assert_within_slack_limits(final)
    text = block_text(final)
    assert "last 7 days" in text and "3 links issued" in text
    assert "<@U0REP>: 3 issued, 1 turned USED, 0 expired unused; median time to USED" in text
    assert "in your DMs" in text
    # The CSV: one row per link issued, in the requester's DM, by the external upload flow.
    [upload] = slack.shared_files()
    assert upload.channel == "DU0REP" and upload.filename.endswith(".csv")
    assert upload.title is not None and upload.title.startswith("[sandbox] ")  # as every send
    assert [c.method for c in slack.api_calls if c.method.startswith("files.")] == [
        "files.getUploadURLExternal", "files.completeUploadExternal"]
    rows = csv_rows(slack)
    assert sorted(r["token_last4"] for r in rows) == sorted(t[-4:] for t in acme + used)
    by_last4 = {r["token_last4"]: r for r in rows}
    for token in acme:
        row = by_last4[token[-4:]]
        assert (row["customer_note"], row["customer_ref"], row["status"]) == (
            "ACME Corp", "crm-42", "VALID")
        assert row["requested_by"] == "U0REP" and row["used_at"] == ""
    assert by_last4[used[0][-4:]]["status"] == "USED"
    assert by_last4[used[0][-4:]]["used_at"].endswith("Z")
    assert all(token not in upload.text for token in acme + used)  # last four only


def test_a_rep_sees_their_own_links_and_an_admin_the_teams(
        make_bot: Callable[..., Bot], slack: FakeSlack) -> None:
    bot = make_bot(ADMIN_USER_IDS="U0ADMIN")
    mine = issue(bot, "1 Mine Ltd")
    theirs = issue(bot, "2 Peer Inc", user="U0PEER")

    rep = bot.command("/onboard-link", "report").final()  # default: 7 days
    assert "your links" in block_text(rep) and "<@U0PEER>" not in block_text(rep)
    assert [r["token_last4"] for r in csv_rows(slack)] == [mine[0][-4:]]

    slack.reset()
    admin = bot.command("/onboard-link", "report 7", user_id="U0ADMIN").final()
    text = block_text(admin)
    assert "whole team" in text and "<@U0PEER>: 2 issued" in text and "<@U0REP>: 1 issued" in text
    assert sorted(r["token_last4"] for r in csv_rows(slack)) == sorted(
        t[-4:] for t in mine + theirs)
    assert slack.shared_files()[0].channel == "DU0ADMIN"


def test_days_outside_the_retention_are_refused_politely_saying_what_is_allowed(
        make_bot: Callable[..., Bot], slack: FakeSlack) -> None:
    bot = make_bot(AUDIT_RETENTION_DAYS=30)
    for days in ("0", "400", "x", "31"):
        reply = bot.command("/onboard-link", f"report {days}")
        text = block_text(reply.ack)
        assert "1 to 30 days" in text, text
        assert "Preparing" not in text
    accepted = bot.command("/onboard-link", "report 30")
    assert "Preparing" in block_text(accepted.ack)
    assert "No links issued in the last 30 days" in block_text(accepted.final())
    assert slack.shared_files() == []  # no CSV of nothing


def test_links_that_expired_unused_are_followed_up_and_an_empty_period_says_so(
        make_core: Callable[..., Core], clock: FrozenDateTimeFactory) -> None:
    core = make_core()
    core.onboarding.issue(REP, 1, "Initech <!here>", customer_ref="hub-7")
    clock.tick(timedelta(hours=25))  # its 24 h are over, never USED
    records = core.history.period(REP.team_id, REP.user_id, now() - timedelta(days=7))
    assert [r.status_at(now()) for r in records] == ["EXPIRED"]

    summary = summarise(records, now())
    assert summary.reps[0].expired == 1
    message = messages.report(summary, 7, False, "csv")
    text = block_text(message)
    assert "Follow up" in text and "CRM ref hub-7" in text and "<@U0REP>" in text
    assert "<!here>" not in text  # the note is escaped

    clock.tick(timedelta(days=8))
    assert core.history.period(REP.team_id, None, now() - timedelta(days=7)) == []


def test_the_per_link_record_expires_after_the_retention_and_is_small(
        make_core: Callable[..., Core], redis_client: redis.Redis) -> None:
    """Every history key has a TTL of AUDIT_RETENTION_DAYS; a link's record with the longest
    note and reference stays under 1 KB of Redis memory, its index entry under 100 B."""
    core = make_core(AUDIT_RETENTION_DAYS=30)
    result = core.onboarding.issue(REP, 1, "N" * KEPT_NOTE, customer_ref="R" * KEPT_REF)
    [link] = result.links
    key = HISTORY_LINK.format(link_id(link.token))
    index = HISTORY_INDEX.format(REP.team_id)
    for name in (key, index):
        assert 29 * DAY < redis_client.ttl(name) <= 30 * DAY, name
    assert link.token not in str(redis_client.get(key))  # last four only
    assert redis_client.memory_usage(key) <= 1024
    core.statuses.record(link, "USED")  # a status change keeps the TTL
    assert 29 * DAY < redis_client.ttl(key) <= 30 * DAY
    assert '"s":"USED"' in str(redis_client.get(key))
    before = redis_client.memory_usage(index)
    core.onboarding.issue(REP, 1, "another")
    assert redis_client.memory_usage(index) - before <= 100
    # A read is bounded: the newest `limit` links, oldest first.
    since = now() - timedelta(days=1)
    assert [r.customer_note for r in core.history.period(REP.team_id, None, since, limit=1)
            ] == ["another"]
    assert len(core.history.period(REP.team_id, REP.user_id, since, limit=1)) == 1
    assert len(core.history.period(REP.team_id, None, since)) == 2
    # A record that lapsed is not made again by a late status (no key without a TTL).
    redis_client.delete(key)
    core.statuses.record(link, "EXPIRED")
    assert not redis_client.exists(key)


def test_a_refused_upload_still_answers_with_the_summary_and_says_why(
        bot: Bot, slack: FakeSlack) -> None:
    issue(bot, "1 ACME Corp")
    slack.errors["files.completeUploadExternal"] = "not_allowed_token_type"

    final = bot.command("/onboard-link", "report 7").final()

    text = block_text(final)
    assert "<@U0REP>: 1 issued" in text
    assert "The CSV could not be sent to your DMs: Slack said `not_allowed_token_type`" in text
    assert slack.shared_files() == []
