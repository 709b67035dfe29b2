"""bot/slack/messages.py and blocks.py: messages from the bot's data, within limits and inert."""

from __future__ import annotations

import html
import json
import shlex
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from bot.cli import track
from bot.domain.models import Batch, Listing, Requester, TrackedLink
from bot.domain.onboarding import BudgetWait, CheckResult, IssueResult
from bot.domain.recording import UntrackedLink
from bot.domain.status import Funnel
from bot.domain.store import StoreUnavailable
from bot.exotel.client import ExotelError, ExotelNotFound, ExotelUnavailable
from bot.slack import blocks, linkviews, messages
from bot.slack.command_text import OnboardRequest, parse_again
from tests.blockkit import (
    assert_inert,
    assert_within_slack_limits,
    blocks_of,
    mrkdwn_texts,
    stray_brackets,
    text_objects,
)

ISSUED_AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
EXPIRES_AT = ISSUED_AT + timedelta(hours=24)
REQUESTER = Requester(team_id="T0FAKE", user_id="U0REP", channel_id="C0SALES")
EVIL_NOTE = "<!channel> *x* <@U123> <https://evil|click>"
EVIL_PARTS = ("<!channel>", "<@U123>", "<https://evil")


def shown(message: dict) -> str:
    return json.dumps(message, ensure_ascii=False)


def tracked(note: str = "", token: str | None = None) -> TrackedLink:
    token = token or uuid.uuid4().hex + uuid.uuid4().hex[:8]
    url = f"https://messaging.exotel.com/ua-links/isv-onboard/{token}"  # 90 characters
    return TrackedLink(token=token, url=url, batch_id="b1", requester=REQUESTER, note=note,
                       issued_at=ISSUED_AT, expires_at=EXPIRES_AT)


def issue_result(count: int, note: str = "", errors: list[ExotelError] | None = None,
                 requested: int | None = None) -> IssueResult:
    return IssueResult(requested=requested or count, note=note,
                       links=[tracked(note) for _ in range(count)], errors=errors or [])


def test_fifty_links_with_a_long_note_fit_in_one_message() -> None:
    note = ("ACME Corp, Priya's team; " * 20)[:500]
    result = issue_result(50, note=note)
    assert all(len(link.url) == 90 for link in result.links)

    message = messages.issued(result)

    assert_within_slack_limits(message)
    text = shown(message)
    assert all(link.url in text for link in result.links)
    assert message["response_type"] == "ephemeral"


def test_a_customer_note_never_reaches_mrkdwn_unescaped() -> None:
    for message in (messages.issued(issue_result(2, note=EVIL_NOTE)),
                    messages.checked(CheckResult("tok1", "VALID", tracked(EVIL_NOTE, "tok1")))):
        assert_inert(message, *EVIL_PARTS)
        plain = [o["text"] for o in text_objects(blocks_of(message)) if o["type"] == "plain_text"]
        assert any(EVIL_NOTE in text for text in plain)  # shown as typed, where it is inert


def test_escape() -> None:
    assert blocks.escape("a & <b> > <!channel>") == "a &amp; &lt;b&gt; &gt; &lt;!channel&gt;"
    assert blocks.escape("&amp;") == "&amp;amp;"  # what the user typed, shown as typed
    assert blocks.escape("*bold* _x_") == "*bold* _x_"


def test_slack_date() -> None:
    moment = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    expected = "<!date^1700000000^{date_short_pretty} at {time}|2023-11-14 22:13 UTC>"
    assert blocks.slack_date(moment) == expected
    ist = timezone(timedelta(hours=5, minutes=30))
    assert blocks.slack_date(moment.astimezone(ist)) == expected


@pytest.mark.parametrize(("left", "expected"), [
    (timedelta(hours=24), "24 h 0 min left"),
    (timedelta(hours=23, minutes=59, seconds=59), "23 h 59 min left"),
    (timedelta(hours=1, minutes=5), "1 h 5 min left"),
    (timedelta(minutes=59, seconds=59), "59 min left"),
    (timedelta(seconds=30), "1 min left"),
    (timedelta(0), "expired"),
    (timedelta(minutes=-5), "expired"),
])
def test_time_left(left: timedelta, expected: str) -> None:
    with freeze_time(ISSUED_AT):
        assert blocks.time_left(ISSUED_AT + left) == expected
    assert blocks.time_left(EXPIRES_AT, at=EXPIRES_AT - left) == expected


@freeze_time(ISSUED_AT + timedelta(hours=22, minutes=30))
def test_checked_shows_status_issuer_note_and_time_left() -> None:
    message = messages.checked(CheckResult("abcd1234wxyz", "USED", tracked("ACME", "abcd1234wxyz")))
    text = shown(message)
    assert "*USED*" in text and "…wxyz" in text and "abcd1234" not in text
    assert "<@U0REP>" in text
    assert "Customer note: ACME" in text
    assert "(1 h 30 min left)" in text


def test_checked_untracked_token_and_unknown_status() -> None:
    message = messages.checked(CheckResult("tok1", "<weird>", None))
    text = shown(message)
    assert "not tracked by this bot" in text
    assert_inert(message, "<weird>")


@pytest.mark.parametrize("error", [RuntimeError("secret-xyz"), KeyError("secret-xyz"),
                                   ValueError("redis://:secret-xyz@host")])
def test_problem_never_shows_an_unknown_exception(error: Exception) -> None:
    text = shown(messages.problem(error))
    assert "secret-xyz" not in text
    assert "Something went wrong inside the bot" in text


def test_problem_explains_known_failures() -> None:
    assert "Redis" in shown(messages.problem(StoreUnavailable("x")))
    assert "about 20 min" not in shown(messages.problem(BudgetWait(1200, 5)))
    assert "next 20 min" in shown(messages.problem(BudgetWait(1200, 5)))
    found = messages.problem(ExotelNotFound("Exotel does not know this token <b>"))
    assert "does not know this token &lt;b&gt;" in mrkdwn_texts(found)[1]


def test_failure_summary_counts_and_reasons() -> None:
    down = ExotelUnavailable("Exotel is having trouble (HTTP 503). Please try again shortly.")
    message = messages.issued(issue_result(4, errors=[down], requested=5))
    text = shown(message)
    assert "1 of 5 links could not be created" in text
    assert "HTTP 503" in text
    assert "4 WhatsApp onboarding links" in text

    message = messages.issued(issue_result(2, errors=[down, down, ExotelError("<odd>")],
                                           requested=5))
    text = "\n".join(mrkdwn_texts(message))
    assert "3 of 5 links could not be created" in text
    assert "(×2)" in text
    assert "&lt;odd&gt;" in text and "<odd>" not in text


def test_all_failed_says_nothing_was_issued() -> None:
    down = ExotelUnavailable("Exotel could not be reached.")
    text = shown(messages.issued(issue_result(0, errors=[down] * 3, requested=3)))
    assert "No onboarding links could be created" in text
    assert "Exotel could not be reached." in text


@pytest.mark.parametrize("message", [
    messages.onboard_help(), messages.check_help(), messages.working(3), messages.checking(),
    messages.usage_problem("“<x>” is not"), messages.check_usage_problem("<x> & y"),
], ids=["onboard_help", "check_help", "working", "checking", "usage", "check_usage"])
def test_fixed_texts_have_no_stray_angle_brackets(message: dict) -> None:
    # Slack reads any <...> in mrkdwn as a link or mention; literal ones must be &lt; &gt;.
    for text in mrkdwn_texts(message):
        assert stray_brackets(text) == "", text


FORMATTING_NOTE = "*bold* _it_ ~gone~ `code` \u202eevil\u2066 <!channel> & co"
FORMATTING_PARTS = ("*bold*", "_it_", "~gone~", "`code`", "\u202e", "\u2066", "<!channel>")


def _listing(note: str) -> Listing:
    batch = Batch(batch_id="b1", requester=REQUESTER, note=note, tokens=["t1", "t2"],
                  issued_at=ISSUED_AT, expires_at=EXPIRES_AT)
    return Listing(batches=[batch], total=1)


@freeze_time(ISSUED_AT)
def test_a_note_cannot_format_or_reorder_a_listing_the_home_tab_or_a_fallback() -> None:
    listing = linkviews.listing(_listing(FORMATTING_NOTE), {}, "user", "U0REP")
    home = linkviews.home(_listing(FORMATTING_NOTE), {}, "U0REP", Funnel(0, 0, 0, None), None)
    issued = messages.issued(issue_result(1, note=FORMATTING_NOTE))
    for message in (listing, home, issued):
        texts = [*mrkdwn_texts(message), message.get("text", "")]
        for part in FORMATTING_PARTS:
            assert not any(part in text for text in texts), (part, texts)
    [line] = [text for text in mrkdwn_texts(listing) if "bold" in text]
    assert "\u2217bold\u2217 \u02cdit\u02cd \u223cgone\u223c \u02cbcode\u02cb evil" in line
    assert "&lt;!channel&gt; &amp; co" in line
    assert "\u2217bold\u2217" in issued["text"]


# CRM references: plain text where the note is, `escape_note` where mrkdwn needs them.

HOSTILE_REF = "*b*_i_~s~`c`\u202e<!channel>&<@U123>" + "r" * 170  # 200 characters once stripped


def _ref_batch(n: int = 1, ref: str = HOSTILE_REF, note: str = "ACME") -> Batch:
    return Batch(batch_id=f"b{n}", requester=REQUESTER, note=note, tokens=["t1", "t2"],
                 issued_at=ISSUED_AT, expires_at=EXPIRES_AT,
                 reminder_due=EXPIRES_AT - timedelta(hours=1), customer_ref=ref)


@freeze_time(ISSUED_AT)
def test_a_crm_reference_is_shown_in_listings_home_reminders_and_replies_and_formats_nothing(
) -> None:
    batch = _ref_batch()
    result = IssueResult(requested=1, note="ACME", customer_ref=HOSTILE_REF, batch=batch,
                         links=[tracked("ACME")])
    listing = linkviews.listing(Listing([batch], 1), {}, "user", "U0REP")
    home = {"blocks": linkviews.home(Listing([batch], 1), {}, "U0REP", Funnel(0, 0, 0, None),
                                     None)["blocks"]}
    reminder = messages.reminder(batch, {"t1": "VALID"}, timedelta(0))
    issued = messages.issued(result)
    shared = messages.shared(batch, [tracked("ACME")], REQUESTER)
    for message in (listing, home, reminder, issued, shared):
        assert "r" * 20 in shown(message)  # shown (listings shorten it, as they do notes)
        assert_inert(message, "<!channel>", "<@U123>")
        for text in mrkdwn_texts(message):
            for part in ("*b*", "_i_", "~s~", "`c`", "\u202e"):
                assert part not in text, (part, text)
    for message in (listing, home):  # mrkdwn: through the note's own escaping
        [line] = [t for t in mrkdwn_texts(message) if "rrrr" in t]
        shortened = messages._shorten(HOSTILE_REF, messages.LISTED_REF)
        assert f"*ACME* (CRM ref {blocks.escape_note(shortened)}):" in line
    stripped = HOSTILE_REF.replace("\u202e", "")
    for message in (reminder, issued, shared):  # plain text: exactly as typed, bidi aside
        plain = [o["text"] for o in text_objects(blocks_of(message)) if o["type"] == "plain_text"]
        assert f"CRM reference: {stripped}" in plain
        assert "Customer note: ACME" in plain


@freeze_time(ISSUED_AT)
def test_no_crm_reference_shows_nothing_of_one() -> None:
    batch = _ref_batch(ref="")
    for message in (linkviews.listing(Listing([batch], 1), {}, "user", "U0REP"),
                    messages.reminder(batch, {}, timedelta(0)),
                    messages.issued(issue_result(1, note="ACME"))):
        assert "CRM" not in shown(message)
    assert blocks.customer_blocks("", "") == []


@freeze_time(ISSUED_AT)
def test_twenty_batches_with_the_longest_notes_and_references_stay_within_slacks_limits(
) -> None:
    long_note = ("&<>*_" * 100)[:500]  # escapes to five times its length
    long_ref = ("&<>" * 70)[:200]
    batches = [_ref_batch(n, long_ref, long_note) for n in range(25)]
    details = {b.batch_id: [(tracked(), None), (tracked(), None)] for b in batches}
    listing = linkviews.listing(Listing(batches[:20], 25), details, "all", "U0REP")
    assert_within_slack_limits(listing)
    assert "older ones" in shown(listing)  # the rest counted
    home = linkviews.home(Listing(batches[:20], 25), details, "U0REP", Funnel(0, 0, 0, None),
                          None)
    assert len(home["blocks"]) <= linkviews.HOME_MAX_BLOCKS and "older ones" in shown(home)
    reminder = messages.reminder(batches[0], {}, timedelta(0))
    assert_within_slack_limits(reminder)
    issued = messages.issued(IssueResult(requested=50, note=long_note, customer_ref=long_ref,
                                         batch=batches[0],
                                         links=[tracked(long_note) for _ in range(50)]))
    assert_within_slack_limits(issued)


def _again(message: dict) -> str:
    [value] = [e["value"] for b in blocks_of(message) if b["type"] == "actions"
               for e in b["elements"]]
    return str(value)


def test_the_repeat_answer_shows_the_reference_and_issuing_anyway_asks_with_it() -> None:
    batch = _ref_batch(ref="crm-1")
    answer = linkviews.already_issued(batch, [], 2, "ACME", "crm-1")
    plain = [o["text"] for o in text_objects(blocks_of(answer)) if o["type"] == "plain_text"]
    assert "CRM reference: crm-1" in plain
    assert parse_again(_again(answer)) == OnboardRequest(2, "ACME", "crm-1")
    # Asked without one: the live batch's reference is the customer's.
    assert parse_again(_again(linkviews.already_issued(batch, [], 1, "ACME"))) == (
        OnboardRequest(1, "ACME", "crm-1"))
    assert parse_again(_again(linkviews.already_issued(_ref_batch(ref=""), [], 1, "ACME"))) == (
        OnboardRequest(1, "ACME", ""))


def test_issuing_anyway_keeps_a_reference_with_spaces_and_a_note_with_a_ref_word() -> None:
    """The value once was the command's text, read again as a command: "ACME Corp" came back
    as the reference "ACME" and the note's "Corp", and a note's `ref:` word as a reference."""
    batch = _ref_batch(ref="ACME Corp", note="ask for ref:42 at the desk")
    answer = linkviews.already_issued(batch, [], 3, "ask for ref:42 at the desk")
    assert parse_again(_again(answer)) == OnboardRequest(3, "ask for ref:42 at the desk",
                                                         "ACME Corp")


def test_a_note_too_long_for_a_button_value_gets_no_button() -> None:
    """Only control characters (escaped six-fold in JSON) make one: the answer stays."""
    note = "\x07" * 500
    answer = linkviews.already_issued(_ref_batch(note=note), [], 1, note)
    assert [b for b in blocks_of(answer) if b["type"] == "actions"] == []
    assert "You already have" in shown(answer)


def test_the_used_dm_names_the_reference_inert() -> None:
    batch = _ref_batch(ref="crm_1 <!here>")
    used = tracked("ACME", "t1")
    message = linkviews.link_used(batch, used, [used], {})
    assert_inert(message, "<!here>")
    assert "(CRM ref crm\u02cd1 &lt;!here&gt;)" in shown(message)


def test_escape_note() -> None:
    assert blocks.escape_note("a*b_c~d`e\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068"
                                "\u2069<x>&") == "a\u2217b\u02cdc\u223cd\u02cbe&lt;x&gt;&amp;"


def test_a_plain_text_note_carries_no_bidi_control() -> None:
    message = messages.issued(issue_result(1, note="abc\u202edef"))
    plain = [o["text"] for o in text_objects(blocks_of(message)) if o["type"] == "plain_text"]
    assert "Customer note: abcdef" in plain


def test_a_button_reply_keeps_the_clicked_message_and_a_post_drops_reply_only_keys() -> None:
    reply = blocks.keeping_original(messages.issued(issue_result(1)))
    assert reply["replace_original"] is False and reply["response_type"] == "ephemeral"
    post = blocks.as_post({**reply, "unfurl_links": False})
    assert set(post) == {"text", "blocks", "unfurl_links"}  # what chat.postMessage takes
    assert post["blocks"] == reply["blocks"] and post["text"] == reply["text"]


# Links the bot could not record (Redis did not answer) ----------------------------------


def untracked(note: str = "", requester: Requester = REQUESTER) -> UntrackedLink:
    token = str(uuid.uuid4())
    return UntrackedLink(url=f"https://messaging.exotel.com/ua-links/isv-onboard/{token}",
                         token=token, requester=requester, note=note, batch_id="b1",
                         issued_at=ISSUED_AT)


def track_commands(message: dict) -> list[list[str]]:
    """The operator's commands in the message, as Slack shows them and a shell splits them."""
    [text] = [t for t in mrkdwn_texts(message) if "```" in t]
    code = text.split("```")[1]
    return [shlex.split(html.unescape(line)) for line in code.splitlines()]


SHELL_NOTE = "Priya's <!channel> & co; $(touch /tmp/x) \"quoted\" -x"


def test_untracked_links_are_shown_with_a_plain_warning_and_the_operators_command() -> None:
    links = [untracked(SHELL_NOTE), untracked(SHELL_NOTE)]
    message = messages.issued(IssueResult(requested=3, note=SHELL_NOTE,
                                          links=[tracked(SHELL_NOTE)], untracked=links))
    assert_within_slack_limits(message)
    text = shown(message)
    assert "3 WhatsApp onboarding links" in text and "(2 not tracked by the bot)" in text
    assert all(link.url in text for link in links)
    assert "These 2 links are not tracked by the bot" in text
    assert "They work all the same until" in text
    assert ("will not remind you of them, list them or tell you when a customer finishes "
            "with them") in text
    assert_inert(message, "<!channel>")
    for text in mrkdwn_texts(message):
        assert stray_brackets(text) == "", text
    commands = track_commands(message)
    assert len(commands) == 2
    for argv, link in zip(commands, links, strict=True):
        assert argv[:4] == ["python", "-m", "bot", "track"]
        request = track.parse(argv[4:])  # what the operator's shell hands the command
        assert (request.link.url, request.link.token) == (link.url, link.token)
        assert request.requester == REQUESTER and request.issued_at == ISSUED_AT
        assert request.note == SHELL_NOTE  # every character as typed, none run by the shell


def test_a_note_in_the_track_command_formats_nothing_and_reads_back_inert() -> None:
    message = messages.issued(IssueResult(requested=1, note=FORMATTING_NOTE,
                                          untracked=[untracked(FORMATTING_NOTE)]))
    for text in mrkdwn_texts(message):
        for part in FORMATTING_PARTS:
            assert part not in text, (part, text)
    [argv] = track_commands(message)
    assert track.parse(argv[4:]).note == (
        "\u2217bold\u2217 \u02cdit\u02cd \u223cgone\u223c \u02cbcode\u02cb evil <!channel> & co")


def test_fifty_untracked_links_with_a_long_note_fit_and_the_commands_left_out_are_counted(
) -> None:
    note = ("ACME Corp, Priya's team; " * 20)[:500].strip()  # as notes come in
    links = [untracked(note) for _ in range(50)]
    message = messages.issued(IssueResult(requested=50, note=note, untracked=links))
    assert_within_slack_limits(message)
    text = shown(message)
    assert all(link.url in text for link in links)
    commands = track_commands(message)
    assert 1 <= len(commands) < 50
    assert all(track.parse(argv[4:]).note == note for argv in commands)
    assert f"For the other {50 - len(commands)}: the same command" in text


def test_only_untracked_links_promise_no_reminder_and_offer_no_buttons() -> None:
    message = messages.issued(IssueResult(requested=1, note="", untracked=[untracked()]))
    text = shown(message)
    assert "This link is not tracked" in text and "It works all the same" in text
    assert messages.RULES not in text and "Reminder in this channel" not in text
    assert not [b for b in blocks_of(message) if b["type"] == "actions"]
    [argv] = track_commands(message)
    assert "--note" not in " ".join(argv)


def test_tracked_links_whose_reminder_failed_say_so() -> None:
    link = tracked()
    batch = Batch(batch_id="b1", requester=REQUESTER, note="", tokens=[link.token],
                  issued_at=ISSUED_AT, expires_at=EXPIRES_AT,
                  reminder_due=EXPIRES_AT - timedelta(hours=1))
    message = messages.issued(IssueResult(requested=1, note="", batch=batch, links=[link],
                                          no_reminder=True))
    text = shown(message)
    assert "No reminder: the bot's database did not answer" in text
    assert "Reminder in this channel" not in text
    assert [b for b in blocks_of(message) if b["type"] == "actions"]  # Forget and share stay


def test_the_help_says_how_to_give_a_crm_reference() -> None:
    text = messages.onboard_help()["text"]
    assert "[ref:CRM reference]" in text and "up to 200 characters" in text
    assert "ref:hubspot-12345`" in text
