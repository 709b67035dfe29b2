"""3. Backlog at Exotel's budget: 8 users ask for 50 links each at once, the bot held to
Exotel's real 200 requests a minute; all delivered, how close to the budget, never over it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.harness import (
    TRACEBACKS,
    Figure,
    Section,
    bot_processes,
    fresh_redis,
    links_in,
    replies_at,
    send_command,
)
from bot.exotel.sandbox import ExotelSandbox, Fault
from testkit.slack import FakeSlack
from testkit.wait import wait_until

BACKLOG_USERS = 8
BACKLOG_LINKS = 50
BUDGET = 200  # Exotel's requests a minute per account
BACKLOG_EXOTEL = 0.3
BACKLOG_DEADLINE = 130.0  # 2 min 10 s
BUDGET_USE_TARGET = 0.95


@dataclass
class UserOutcome:
    user: str
    sent: float
    links: int = 0  # links in the reply that carried them
    delivered: float | None = None  # seconds from sending to that reply
    eta: float | None = None  # the seconds the "in about N s" message promised
    eta_at: float | None = None  # seconds from sending to that message

    @property
    def eta_first(self) -> bool:
        return self.eta_at is not None and (self.delivered is None
                                            or self.eta_at <= self.delivered)


def most_in_window(times: list[float], window: float = 60.0) -> int:
    """The most of `times` that fall in any `window` seconds."""
    times, most, first = sorted(times), 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def eta_seconds(reply: dict[str, Any]) -> float | None:
    text = str(reply.get("text") or "")
    if "in about" not in text:
        return None
    return float(text.split("in about", 1)[1].split()[0])


def run(exotel: ExotelSandbox, slack: FakeSlack) -> Section:
    with fresh_redis() as url, bot_processes(exotel, slack, url,
                                             EXOTEL_RATE_PER_MINUTE=str(BUDGET)) as bot:
        exotel.reset()
        exotel.always = Fault(passthrough=True, delay=BACKLOG_EXOTEL)
        users = [f"U0BACKLOG{n}" for n in range(BACKLOG_USERS)]
        with ThreadPoolExecutor(BACKLOG_USERS) as pool:
            sent = list(pool.map(lambda user: send_command(
                bot.url, f"{BACKLOG_LINKS} backlog", slack.response_url(user), user_id=user),
                users))
        began = min(sent)
        outcomes = [UserOutcome(user, at) for user, at in zip(users, sent, strict=True)]

        def all_delivered() -> bool:
            for outcome in outcomes:
                read_replies(slack, outcome)
            return all(o.delivered for o in outcomes)

        # Not in time is a figure (MISS), not a failure: wait, then report what came.
        wait_until(all_delivered, began + BACKLOG_DEADLINE + 30 - time.monotonic(),
                   "every user's links delivered", every=0.1, fail=False)
        posts = [call.at for call in exotel.calls_of("POST")]
        exotel.always = None
        tracebacks = bot.tracebacks
    return backlog_section(outcomes, began, posts, tracebacks)


def read_replies(slack: FakeSlack, outcome: UserOutcome) -> None:
    for reply, arrived in replies_at(slack, outcome.user):
        if (eta := eta_seconds(reply)) is not None and outcome.eta is None:
            outcome.eta, outcome.eta_at = eta, arrived - outcome.sent
        elif links_in(reply) and outcome.delivered is None:
            outcome.links, outcome.delivered = links_in(reply), arrived - outcome.sent


def backlog_section(outcomes: list[UserOutcome], began: float, posts: list[float],
                    tracebacks: bool) -> Section:
    wanted = BACKLOG_USERS * BACKLOG_LINKS
    links = sum(o.links for o in outcomes)
    done = [o.sent + o.delivered - began for o in outcomes if o.delivered is not None]
    finished = max(done) if len(done) == len(outcomes) else None
    # A moving window lets the first BUDGET go at once and the next BUDGET a minute later:
    # with nothing else in the way, the last link comes back one round trip after that.
    ideal = 60.0 * (wanted / BUDGET - 1) + BACKLOG_EXOTEL
    use = ideal / finished if finished else 0.0
    most = most_in_window(posts)
    waited = [o for o in outcomes if o.eta is not None]
    figures = [
        Figure(f"links delivered, {BACKLOG_USERS} users × {BACKLOG_LINKS} at once",
               f"{links} of {wanted}", f"all, within {BACKLOG_DEADLINE:.0f} s",
               links == wanted and finished is not None and finished <= BACKLOG_DEADLINE),
        Figure("last links delivered after", f"{finished:.1f} s" if finished else "never"),
        Figure("share of Exotel's budget used: ideal ÷ actual time",
               f"{ideal:.1f} ÷ {finished or 0:.1f} s = {use:.1%}",
               f"≥ {BUDGET_USE_TARGET:.0%}", use >= BUDGET_USE_TARGET),
        Figure("most Exotel POSTs in any 60 s (fake Exotel's clock)", f"{most}",
               f"≤ {BUDGET}", most <= BUDGET),
        Figure("users told to wait first (\"your links in about N s\")",
               f"{len(waited)} of {len(outcomes)}, all before their links: "
               f"{'yes' if all(o.eta_first for o in waited) else 'no'}"),
    ]
    notes = [
        f"A fresh Redis, `web` and `worker` processes with EXOTEL_RATE_PER_MINUTE={BUDGET} "
        f"(the real budget) and the default daily quota; fake Exotel answering in "
        f"{BACKLOG_EXOTEL} s. {BACKLOG_USERS} users each send `/onboard-link {BACKLOG_LINKS}` "
        "at the same moment; times from the first command sent.",
        f"Ideal: a moving 60 s window lets {BUDGET} calls go at once and the next {BUDGET} "
        f"60 s after the first; the last link is back one Exotel round trip later: "
        f"{ideal:.1f} s. Budget used = ideal ÷ actual.",
        f"{len(posts)} Exotel POSTs in all; first at {min(posts) - began:.2f} s, last at "
        f"{max(posts) - began:.2f} s." if posts else "No Exotel POSTs.",
        "Per user (ETA promised, told at, links delivered at): " + "; ".join(
            f"{o.user[-1]}: " + (f"{o.eta:.0f} s at {o.eta_at:.1f} s, " if o.eta else "no wait, ")
            + (f"{o.links} at {o.delivered:.1f} s" if o.delivered else "nothing")
            for o in outcomes) + ".",
    ]
    if tracebacks:
        notes.append(TRACEBACKS)
    return Section("3. Backlog: 400 links at once at Exotel's 200 a minute", figures, notes)
