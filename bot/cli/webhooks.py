"""`python -m bot webhooks [test | enable URL]`: the webhook receivers and their deliveries.

    python -m bot webhooks              each URL: delivered / pending / failing, last error
    python -m bot webhooks test         send a webhook.test event to each URL, now; print
                                        each answer's status
    python -m bot webhooks enable URL   deliver to URL again after its 410 Gone

URLs are shown with any credential in them hidden. Exit status: 0 done, 1 Redis did not
answer (or a test delivery got no 2xx answer), 2 bad input or no WEBHOOK_URLS.
"""

from __future__ import annotations

import sys
from typing import TextIO

import redis

from bot.domain.events import ping_event
from bot.domain.store import StoreUnavailable, connect_for
from bot.domain.webhooks import Webhooks
from bot.runtime.composition import build_webhooks
from bot.settings import Settings
from bot.telemetry.logs import safe_url
from bot.webhooks import sender

USAGE = "usage: python -m bot webhooks [test | enable URL]"


def run(settings: Settings, args: list[str], out: TextIO | None = None,
        err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if not (args == [] or args == ["test"] or (len(args) == 2 and args[0] == "enable")):
        print(USAGE, file=err)
        return 2
    client = connect_for(settings)
    webhooks = build_webhooks(settings, client, connect_for(settings, decode_responses=False))
    if webhooks is None:
        print("No webhooks: WEBHOOK_URLS is not set.", file=err)
        return 2
    try:
        if not args:
            return listing(webhooks, out)
        if args == ["test"]:
            return test(webhooks, out)
        return enable(webhooks, args[1], out, err)
    except (StoreUnavailable, redis.RedisError):
        print("Redis is not answering: check REDIS_URL.", file=err)
        return 1


def listing(webhooks: Webhooks, out: TextIO) -> int:
    for url in webhooks.urls:
        state = webhooks.state(url)
        mark = "✗ disabled by 410 Gone" if state.disabled else "✓ enabled"
        error = (f"; last error {state.last_error} at {state.last_error_at}"
                 if state.last_error else "; no error")
        gave_up = f", {state.gave_up} given up" if state.gave_up else ""
        print(f"{safe_url(url)}: {mark}; {state.delivered} delivered, {state.pending} pending, "
              f"{state.failing} failing{gave_up}{error}", file=out)
    return 0


def test(webhooks: Webhooks, out: TextIO) -> int:
    """One webhook.test event, sent to each URL from here (not queued), disabled or not."""
    event = ping_event()
    failed = False
    for url in webhooks.urls:
        outcome = sender.send(url, webhooks.secret, event.id, event.body)
        failed = failed or not outcome.delivered
        print(f"{safe_url(url)}: {outcome}", file=out)
    return 1 if failed else 0


def enable(webhooks: Webhooks, url: str, out: TextIO, err: TextIO) -> int:
    if url not in webhooks.urls:
        print(f"{safe_url(url)} is not one of WEBHOOK_URLS.", file=err)
        return 2
    was = webhooks.enable(url)
    print(f"{safe_url(url)}: deliveries resume" if was else
          f"{safe_url(url)} was not disabled: nothing to do", file=out)
    return 0
