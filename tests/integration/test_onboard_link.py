"""`/onboard-link` end to end: signed HTTP in, fake Exotel and Slack around, real Redis under."""

from __future__ import annotations

import csv
import io

import pytest

from bot.cli import audit_export
from bot.domain.store import ENDED_KEPT
from bot.exotel.sandbox import ExotelSandbox, Fault
from testkit.env import EXOTEL_KEY, EXOTEL_TOKEN
from tests.blockkit import LINK, assert_inert, assert_within_slack_limits, block_text
from tests.support import Bot


def test_three_links_reach_the_requester_and_are_tracked(bot: Bot, exotel: ExotelSandbox,
                                                         redis_client) -> None:
    reply = bot.command("/onboard-link", "3 ACME Corp")
    assert reply.http.status_code == 200
    assert "Creating 3" in block_text(reply.ack)

    final = reply.final()
    text = block_text(final)
    tokens = LINK.findall(text)
    assert len(set(tokens)) == 3
    assert "ACME Corp" in text
    assert final["response_type"] == "ephemeral"

    posts = exotel.calls_of("POST")
    assert len(posts) == 3
    import base64
    expected = "Basic " + base64.b64encode(f"{EXOTEL_KEY}:{EXOTEL_TOKEN}".encode()).decode()
    assert all(call.authorization == expected for call in posts)
    kept = 86400 + int(ENDED_KEPT.total_seconds())  # the link's 24 h and the poll's last look
    for token in tokens:
        ttl = redis_client.ttl(f"onboard:token:{token}")
        assert kept - 5 <= ttl <= kept


def most_in_flight(starts: list[float], duration: float) -> int:
    """The most requests, each lasting at least `duration` from its start, running together."""
    starts = sorted(starts)
    return max(sum(1 for t in starts if s <= t < s + duration) for s in starts)


def test_fifty_links_arrive_in_one_reply_within_slacks_limits(bot: Bot,
                                                              exotel: ExotelSandbox) -> None:
    reply = bot.command("/onboard-link", "50 ACME Corp")
    assert "Creating 50" in block_text(reply.ack)

    final = reply.final()

    assert_within_slack_limits(final)
    assert len(set(LINK.findall(block_text(final)))) == 50
    assert len(exotel.calls_of("POST")) == 50


def test_fifty_links_take_a_handful_of_round_trips(bot: Bot, exotel: ExotelSandbox) -> None:
    exotel.always = Fault(passthrough=True, delay=0.3)  # 50 in sequence would take 15 s

    final = bot.command("/onboard-link", "50").final(timeout=10)

    # Concurrency is shown by the calls Exotel held at once, not by a stopwatch.
    assert len(set(LINK.findall(block_text(final)))) == 50
    assert most_in_flight([call.at for call in exotel.calls_of("POST")], 0.3) >= 20


@pytest.mark.parametrize("count", ["51", "0", "-2", "2.5"])
def test_a_bad_count_is_refused_in_the_ack(bot: Bot, exotel: ExotelSandbox, count: str) -> None:
    reply = bot.command("/onboard-link", f"{count} ACME")

    assert reply.http.status_code == 200
    text = block_text(reply.ack)
    assert "whole number from 1 to 50" in text
    assert f"“{count}” is not" in text
    bot.worker.stop()  # anything it had been given has now run
    assert exotel.calls == []


def test_a_note_with_slack_markup_stays_inert(bot: Bot, exotel: ExotelSandbox) -> None:
    final = bot.command("/onboard-link", "2 <!channel> *x* <@U123> <https://evil|click>").final()

    assert len(set(LINK.findall(block_text(final)))) == 2
    assert "Customer note: <!channel> *x* <@U123> <https://evil|click>" in block_text(final)
    assert_inert(final, "<!channel>", "<@U123>", "<https://evil")


def test_a_ref_word_is_the_batchs_crm_reference_shown_listed_and_audited(
    bot: Bot, exotel: ExotelSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    final = bot.command("/onboard-link", "2 ACME Corp ref:hubspot-12345").final()
    text = block_text(final)
    tokens = LINK.findall(text)
    assert len(set(tokens)) == 2
    lines = text.split("\n")
    assert "Customer note: ACME Corp" in lines and "ref:" not in text
    assert "CRM reference: hubspot-12345" in lines
    link = bot.core.store.get_link(tokens[0])
    assert link is not None and link.note == "ACME Corp"
    batch = bot.core.store.get_batch(link.batch_id)
    assert batch is not None and batch.customer_ref == "hubspot-12345"

    listing = block_text(bot.command("/onboard-link", "list").ack)
    assert "*ACME Corp* (CRM ref hubspot-12345): 2 links" in listing

    assert audit_export.run(bot.core.settings, None, "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["action"], r["batch_id"], r["customer_ref"]) for r in rows] == [
        ("issue", batch.batch_id, "hubspot-12345")]


@pytest.mark.parametrize(("ref", "says"), [
    ("", "Put the CRM reference right after `ref:`"),
    ("x" * 201, "Please keep the CRM reference to 200 characters (it has 201)"),
    ("crm\u200b42", "can't hold line breaks, tabs or other control characters"),
    ("a ref:b", "Please give one CRM reference only"),
])
def test_a_bad_ref_word_is_refused_in_the_ack(bot: Bot, exotel: ExotelSandbox, ref: str,
                                              says: str) -> None:
    reply = bot.command("/onboard-link", f"2 ACME ref:{ref}")
    assert reply.http.status_code == 200
    assert says in block_text(reply.ack)
    assert reply.ack["response_type"] == "ephemeral"
    bot.worker.stop()  # anything it had been given has now run
    assert exotel.calls == [] and bot.core.store.all_live_batches(5) == []
