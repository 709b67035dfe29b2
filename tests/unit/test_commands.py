"""Reading command text (bot/commands.py) and tokens (bot/tokens.py), without Slack or Exotel."""

from __future__ import annotations

import pytest

from bot.exotel.tokens import mask, parse_token_argument
from bot.slack.command_text import (
    CheckRequest,
    Help,
    OnboardRequest,
    parse_check,
    parse_onboard,
)
from bot.slack.inputs import MAX_NOTE, MAX_REF, UsageError

TOKEN = "3f1c2a9e-5b7d-4e0f-9a21-7c6d5e4b3a10"
LINK = f"https://messaging.exotel.com/ua-links/isv-onboard/{TOKEN}"


@pytest.mark.parametrize(("text", "count", "note"), [
    ("", 1, ""),
    (None, 1, ""),
    ("ACME Corp", 1, "ACME Corp"),
    ("3 ACME Corp", 3, "ACME Corp"),
    ("  3   ACME   Corp ", 3, "ACME Corp"),
    ("50", 50, ""),
    ("1", 1, ""),
    ("3\nACME Corp", 3, "ACME Corp"),  # shift-enter in Slack's composer
    ("3\u00a0ACME", 3, "ACME"),  # a no-break space, as pasted text often has
    ("3ACME", 1, "3ACME"),
])
def test_onboard_count_and_note(text: str | None, count: int, note: str) -> None:
    assert parse_onboard(text) == OnboardRequest(count=count, note=note)


@pytest.mark.parametrize("text", ["51", "0", "-2", "2.5", "1e3", "+3", "1,000", "00",
                                  "999999999999999999999 ACME"])
def test_onboard_count_out_of_range_or_not_whole_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="whole number from 1 to 50"):
        parse_onboard(text)


@pytest.mark.parametrize("text", ["help", "HELP", "--help", "-h", "?", " help "])
def test_onboard_help(text: str) -> None:
    assert parse_onboard(text) == Help()


@pytest.mark.parametrize("text", ["list of clients", "forget me not `x`"])
def test_a_note_that_starts_like_a_subcommand_gets_a_way_round(text: str) -> None:
    with pytest.raises(UsageError) as refusal:
        parse_onboard(text)
    assert f"/onboard-link 1 {text.replace('`', chr(39))}`" in str(refusal.value)
    assert parse_onboard(f"1 {text}") == OnboardRequest(count=1, note=text)


def test_onboard_note_html_entities_are_unescaped() -> None:
    request = parse_onboard("2 &lt;!channel&gt; Tom &amp; Jerry")
    assert request == OnboardRequest(count=2, note="<!channel> Tom & Jerry")


def test_onboard_note_at_the_limit_is_kept_and_over_it_refused() -> None:
    assert parse_onboard("a" * MAX_NOTE) == OnboardRequest(count=1, note="a" * MAX_NOTE)
    assert parse_onboard("5 " + "a" * MAX_NOTE) == OnboardRequest(count=5, note="a" * MAX_NOTE)
    with pytest.raises(UsageError, match=f"{MAX_NOTE} characters"):
        parse_onboard("5 " + "a" * (MAX_NOTE + 1))


@pytest.mark.parametrize("text", ["", None, "  ", "help", "?"])
def test_check_help(text: str | None) -> None:
    assert parse_check(text) == Help()


def test_check_reads_slack_escaped_link() -> None:
    assert parse_check(f"&lt;{LINK}&gt;") == CheckRequest(token=TOKEN)
    assert parse_check(f"<{LINK}|the link>") == CheckRequest(token=TOKEN)


@pytest.mark.parametrize("text", ["../x", "a b", "a" * 500])
def test_check_junk_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="doesn't look like an onboarding token"):
        parse_check(text)


@pytest.mark.parametrize("text", [
    TOKEN,
    f" {TOKEN} ",
    f"`{TOKEN}`",
    f'"{TOKEN}"',
    f"{TOKEN}.",
    LINK,
    f"{LINK}/",
    f"{LINK}.",
    f"{LINK})",
    f"{LINK}?utm_source=slack",
    f"<{LINK}>",
    f"<{LINK}|click here>",
    f"<{LINK}/>",
    f"<{LINK}>.",
    f"messaging.exotel.com/ua-links/isv-onboard/{TOKEN}",
    f"http://messaging.exotel.com/ua-links/isv-onboard/{TOKEN}",
])
def test_token_argument_finds_the_token(text: str) -> None:
    assert parse_token_argument(text) == TOKEN


@pytest.mark.parametrize("text", [
    "", "   ", "../x", "a b", f"{TOKEN} {TOKEN}", "a" * 129, "a" * 500, "x/../y",
    "tok%2F..", "tok;rm", "tök", "https://evil.example/..", "https://evil.example/a%2F..",
    "<mailto:a@b.example|a@b.example>", "javascript:alert(1)", "<>", "``",
])
def test_token_argument_refuses_junk(text: str) -> None:
    assert parse_token_argument(text) is None


def test_token_argument_never_takes_a_query_or_path_beyond_the_last_segment() -> None:
    # Only the last path segment can become the token; the query and `..` never reach Exotel.
    assert parse_token_argument("https://evil.example/x1y2z3?y=../z") == "x1y2z3"
    assert parse_token_argument("a1" * 64) == "a1" * 64
    assert parse_token_argument("a1" * 64 + "b") is None


@pytest.mark.parametrize("text", ["garbage", "abc12", "password", "messaging.exotel.com/x/hello"])
def test_words_and_short_strings_are_no_tokens(text: str) -> None:
    assert parse_token_argument(text) is None


def test_mask_keeps_only_the_last_four_characters() -> None:
    masked = mask(TOKEN)
    assert masked.endswith(TOKEN[-4:])
    assert TOKEN[:-4] not in masked
    assert sum(c.isalnum() for c in masked) == 4
    assert mask("abcdefgh") == "…efgh"


def test_bidi_controls_are_stripped_from_notes() -> None:
    controls = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    request = parse_onboard(f"2 AC{controls}ME \u202eLtd")
    assert request == OnboardRequest(count=2, note="ACME Ltd")
    # Counted after stripping: a note of 500 visible characters padded with controls is kept.
    assert parse_onboard("x" * 500 + controls * 10) == OnboardRequest(count=1, note="x" * 500)
    # Other non-ASCII text is the user's and stays.
    assert parse_onboard("1 Café \u05e9\u05dc\u05d5\u05dd").note == "Café \u05e9\u05dc\u05d5\u05dd"


# A CRM reference: one `ref:` word anywhere in the text of a command that issues links.

@pytest.mark.parametrize(("text", "count", "note", "ref"), [
    ("2 ACME Corp ref:hubspot-12345", 2, "ACME Corp", "hubspot-12345"),
    ("2 ref:hubspot-12345 ACME Corp", 2, "ACME Corp", "hubspot-12345"),
    ("ref:hubspot-12345 2 ACME Corp", 2, "ACME Corp", "hubspot-12345"),
    ("ACME REF:priya@acme.example", 1, "ACME", "priya@acme.example"),
    ("ref:x", 1, "", "x"),
    ("3 Tom &amp; Jerry ref:a&amp;b", 3, "Tom & Jerry", "a&b"),  # Slack's escaping undone
    ("1 ACME ref:&lt;mailto:p@acme.example|p@acme.example&gt;", 1, "ACME", "p@acme.example"),
    ("1 ACME ref:crm\u202e-9", 1, "ACME", "crm-9"),  # bidi controls dropped, as in notes
    ("1 Cross-ref:ACME", 1, "Cross-ref:ACME", ""),  # only a word that starts with it
    ("1 " + "n" * MAX_NOTE + " ref:" + "r" * MAX_REF, 1, "n" * MAX_NOTE, "r" * MAX_REF),
])
def test_a_ref_word_is_the_crm_reference_and_not_part_of_the_note(
        text: str, count: int, note: str, ref: str) -> None:
    assert parse_onboard(text) == OnboardRequest(count=count, note=note, customer_ref=ref)


EXAMPLE = "`/onboard-link 2 ACME Corp ref:hubspot-12345`"
RULE = "a CRM record id or an email, up to 200 characters"


@pytest.mark.parametrize(("text", "says", "allowed"), [
    ("2 ACME ref:", "right after `ref:`, with no space", RULE),
    ("2 ACME ref: hubspot-1", "right after `ref:`, with no space", EXAMPLE),
    ("2 ACME ref:a ref:b", "one CRM reference only; this has 2 `ref:` words", EXAMPLE),
    ("2 ACME ref:" + "r" * (MAX_REF + 1), f"(it has {MAX_REF + 1})",
     f"keep the CRM reference to {MAX_REF} characters"),
    ("2 ACME ref:crm\x00-1", "can't hold line breaks, tabs or other control characters", RULE),
    ("2 ACME ref:crm\x1b[31m", "control characters", RULE),
    ("2 ACME ref:crm\u200b1", "control characters", RULE),  # invisible: not the record typed
    ("list ref:crm-1", "goes with new links, not with `list`, `forget` or `report`", EXAMPLE),
    (f"forget {LINK} ref:crm-1", "goes with new links", EXAMPLE),
])
def test_a_bad_ref_word_is_refused_saying_what_is_allowed(text: str, says: str,
                                                         allowed: str) -> None:
    with pytest.raises(UsageError) as refusal:
        parse_onboard(text)
    assert says in str(refusal.value) and allowed in str(refusal.value)


def test_help_with_a_ref_word_is_still_the_help() -> None:
    assert parse_onboard("help ref:crm-1") == Help()
