"""`/onboard-link` end to end: signed HTTP in, fake Exotel and Slack around, real Redis under."""

from __future__ import annotations

import re

from bot.sandbox import ExotelSandbox
from tests.conftest import Bot, block_text
from tests.support import EXOTEL_KEY, EXOTEL_TOKEN

LINK = re.compile(r"https://messaging\.exotel\.com/ua-links/isv-onboard/([0-9a-f-]+)")


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
    for token in tokens:
        ttl = redis_client.ttl(f"onboard:token:{token}")
        assert 86400 - 5 <= ttl <= 86400
