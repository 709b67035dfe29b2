"""2. Command to links delivered: from sending `/onboard-link` to the reply with its links
reaching the fake Slack's response URL, the fake Exotel taking 1 s a call; one link at a time,
then 50 in one command."""

from __future__ import annotations

import time

import requests

from bench.harness import (
    SLOW_EXOTEL,
    Bot,
    Figure,
    Section,
    links_in,
    ms,
    replies_at,
    send_command,
)
from bench.load import percentile
from bot.exotel.sandbox import ExotelSandbox, Fault
from testkit.slack import FakeSlack
from testkit.wait import wait_until

SPREAD_COMMANDS = 20
SPREAD_EVERY = 0.5
ONE_LINK_P99_TARGET = 1.5
MANY_LINKS = 50
MANY_REPEATS = 5
MANY_TRIPS_TARGET = 2.5


def delivered_after(slack: FakeSlack, name: str, sent: float, links: int,
                    timeout: float = 60) -> float:
    """Seconds from `sent` to the reply at response URL `name` that carries `links` links."""
    arrivals = wait_until(
        lambda: [at for reply, at in replies_at(slack, name) if links_in(reply) == links],
        timeout, f"a reply with {links} links at {name}")
    return arrivals[0] - sent


def run(exotel: ExotelSandbox, slack: FakeSlack, bot: Bot) -> Section:
    exotel.always = Fault(passthrough=True, delay=SLOW_EXOTEL)
    session = requests.Session()
    try:
        start = time.monotonic() + 0.5
        sent = []
        for n in range(SPREAD_COMMANDS):
            time.sleep(max(0.0, start + n * SPREAD_EVERY - time.monotonic()))
            sent.append(send_command(bot.url, "1", slack.response_url(f"one-{n}"),
                                     session=session))
        one = sorted(delivered_after(slack, f"one-{n}", at, 1) for n, at in enumerate(sent))
        many = []
        for n in range(MANY_REPEATS):
            at = send_command(bot.url, str(MANY_LINKS), slack.response_url(f"many-{n}"),
                              session=session)
            many.append(delivered_after(slack, f"many-{n}", at, MANY_LINKS))
    finally:
        exotel.always = None
    return delivery_section(one, many)


def delivery_section(one: list[float], many: list[float]) -> Section:
    p99 = percentile(one, 0.99)
    median, worst = sorted(many)[len(many) // 2], max(many)
    trips = median / SLOW_EXOTEL
    figures = [
        Figure(f"1 link delivered, p99 of {SPREAD_COMMANDS} (p50 {ms(percentile(one, 0.5))})",
               ms(p99), f"≤ {ms(ONE_LINK_P99_TARGET)}", p99 <= ONE_LINK_P99_TARGET),
        Figure(f"{MANY_LINKS} links delivered, median of {MANY_REPEATS} (worst {ms(worst)})",
               f"{ms(median)} = {trips:.2f}× Exotel's {SLOW_EXOTEL:.0f} s",
               f"≤ {MANY_TRIPS_TARGET}×", trips <= MANY_TRIPS_TARGET),
    ]
    notes = [
        f"The web and worker processes of part 1; fake Exotel answering in {SLOW_EXOTEL:.0f} s. "
        "Timed from sending the command to the reply with the links reaching the fake "
        "Slack's response URL (stamped as it arrives, `FakeSlack.arrivals`).",
        f"1 link: {SPREAD_COMMANDS} commands, one every {SPREAD_EVERY} s; p99 of "
        f"{SPREAD_COMMANDS} is the slowest. All: "
        + ", ".join(f"{s * 1000:.0f}" for s in one) + " ms.",
        f"{MANY_LINKS} links: one command at a time, {MANY_REPEATS} times; the bot's Exotel "
        "client makes 25 calls at a time, so 2 round trips is the floor. All: "
        + ", ".join(f"{s * 1000:.0f}" for s in many) + " ms.",
    ]
    return Section("2. Command to links delivered, Exotel 1 s", figures, notes)
