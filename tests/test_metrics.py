"""/metrics: Prometheus text, counters moving as the bot works, whichever process did it."""

from __future__ import annotations

import re

import requests

from tests.conftest import Bot, block_text


def scrape(bot: Bot) -> dict[str, float]:
    response = requests.get(f"{bot.url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    values = {}
    for line in response.text.splitlines():
        match = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def test_counters_move_after_a_command(bot: Bot) -> None:
    before = scrape(bot)
    assert before["onboard_links_issued_total"] == 0
    assert "2 WhatsApp" in block_text(bot.command("/onboard-link", "2 ACME").final())
    after = scrape(bot)
    assert after["onboard_links_issued_total"] == 2
    assert after['onboard_commands_total{command="issue_links",outcome="ok"}'] == 1
    posts = 'onboard_exotel_request_seconds_count{method="POST",outcome="200"}'
    assert after[posts] == 2
    assert after['onboard_exotel_request_seconds_bucket{le="+Inf",method="POST",outcome="200"}'] \
        == 2
    assert after['onboard_jobs{state="scheduled"}'] == 1  # the batch's reminder
