"""Everything a batch writes to Redis goes: keys with TTLs, indexes pruned when written."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta

import redis
from freezegun.api import FrozenDateTimeFactory

from bot.domain.audit import STREAM, Audit
from bot.domain.store import (
    ALL_INDEX,
    BATCH_KEY,
    CHANNEL_INDEX,
    ENDED_KEPT,
    HISTORY_INDEX,
    HISTORY_LINK,
    USER_INDEX,
    link_id,
)
from bot.slack.core import Core
from testkit.slack import FakeSlack
from tests.support import REP, fire_due

DAY = 24 * 3600
KEPT = DAY + int(ENDED_KEPT.total_seconds())  # a batch's keys: its links' 24 h, the last look
# Shared keys, not the batch's: each bounded by something other than a TTL.
BOUNDED = {
    STREAM: "trimmed to AUDIT_RETENTION_DAYS as written (tested below)",
    "rq:queues": "the names of the bot's queues",
    "rq:workers": "the live workers (RQ drops dead ones at its maintenance)",
    "rq:workers:onboard-reminders": "as above, per queue",
    "rq:workers:onboard-status": "as above, per queue",
}


def ttls(client: redis.Redis) -> dict[str, int]:
    return {key: client.ttl(key) for key in client.keys("*")}


def test_every_key_of_a_reminded_batch_expires_within_48_hours(
    make_core: Callable[..., Core], clock: FrozenDateTimeFactory, slack: FakeSlack,
    redis_client: redis.Redis
) -> None:
    """Acceptance 7, the TTLs: a batch issued, its reminder run; then every key it made."""
    core = make_core()
    result = core.onboarding.issue(REP, 1, "ACME")
    assert result.reminder_due is not None
    clock.move_to(result.reminder_due + timedelta(seconds=1))
    fire_due(core)
    assert len(slack.calls("chat.postMessage")) == 1

    keys = ttls(redis_client)
    # The per-link history outlives the batch on purpose: AUDIT_RETENTION_DAYS (90), no more.
    history = {HISTORY_INDEX.format(REP.team_id),
               *(HISTORY_LINK.format(link_id(token)) for token in result.batch.tokens)}
    assert {k for k in keys if k.startswith("onboard:history:")} == history
    assert all(2 * DAY < keys[k] <= 90 * DAY for k in history)
    unbounded = {k: t for k, t in keys.items()
                 if k not in BOUNDED and k not in history and not 0 < t <= 2 * DAY}
    assert unbounded == {}, "keys with no TTL or one over 48 h"
    # The finished reminder job left nothing in RQ: no job hash, result or registry entry.
    assert not [k for k in keys if k.startswith(("rq:job:", "rq:results:", "rq:finished:",
                                                 "rq:failed:", "rq:scheduled:"))]
    assert {k for k in keys if k.startswith("onboard:reminder:")} == {
        f"onboard:reminder:sent:{result.batch.batch_id}"}
    assert redis_client.ttl(STREAM) <= 90 * DAY


def test_listing_indexes_hold_no_expired_batch_after_the_next_issue(
    make_core: Callable[..., Core], clock: FrozenDateTimeFactory, redis_client: redis.Redis
) -> None:
    """Acceptance 7, the indexes: pruned when written, not only when someone lists. The
    listings' at once; everyone's (the status poll's) once the last look is over too."""
    core = make_core()
    old = core.onboarding.issue(REP, 1, "yesterday").batch
    clock.tick(timedelta(hours=24, minutes=1))  # its 24 h have passed (Redis's clock has not)
    new = core.onboarding.issue(REP, 1, "today").batch
    listings = [USER_INDEX.format(REP.team_id, REP.user_id), CHANNEL_INDEX.format(REP.channel_id)]
    for index in listings:
        assert redis_client.zrange(index, 0, -1) == [new.batch_id], index
        assert 0 < redis_client.ttl(index) <= KEPT  # its newest member's, no more
    assert redis_client.zrange(ALL_INDEX, 0, -1) == [old.batch_id, new.batch_id]
    listing = core.store.live_batches("all", REP, 10)
    assert [b.batch_id for b in listing.batches] == [new.batch_id] and listing.total == 1
    assert core.store.get_batch(old.batch_id) is None  # gone, but to the status poll
    assert [b.batch_id for b in core.store.ended_batches(10)] == [old.batch_id]
    clock.tick(ENDED_KEPT)
    core.onboarding.issue(REP, 1, "later")
    assert old.batch_id not in redis_client.zrange(ALL_INDEX, 0, -1)
    assert core.store.ended_batches(10) == []


def test_the_audit_trail_is_trimmed_to_its_retention_and_expires_when_idle(
    redis_client: redis.Redis
) -> None:
    audit = Audit(redis_client, timedelta(seconds=1))
    for n in range(250):
        audit.record("issue", user_id=f"U{n}")
    assert redis_client.xlen(STREAM) == 250
    time.sleep(1.2)  # Redis numbers stream entries by its own clock: no fake clock reaches it
    audit.record("issue", user_id="Ulast")
    # Trimmed by whole nodes of 100 entries: the old ones but the last node's are gone.
    assert redis_client.xlen(STREAM) <= 51
    assert 0 < redis_client.ttl(STREAM) <= 1


def test_a_crm_reference_lives_in_the_batch_key_and_costs_nothing_when_there_is_none(
    make_core: Callable[..., Core], redis_client: redis.Redis
) -> None:
    """The reference is a field of the batch's own key (so it expires with it, bounded by
    MAX_REF characters), and in the audit entry of the issue; a batch without one stores
    no byte for it."""
    core = make_core()
    with_ref = core.onboarding.issue(REP, 1, "ACME", customer_ref="hubspot-12345").batch
    without = core.onboarding.issue(REP, 1, "Globex").batch
    assert with_ref is not None and without is not None
    key = BATCH_KEY.format(with_ref.batch_id)
    assert json.loads(redis_client.get(key))["customer_ref"] == "hubspot-12345"
    assert core.store.get_batch(with_ref.batch_id) == with_ref
    assert 0 < redis_client.ttl(key) <= KEPT
    assert not [k for k in redis_client.keys("*") if "hubspot" in k]  # no key of its own
    plain = redis_client.get(BATCH_KEY.format(without.batch_id))
    assert "customer_ref" not in plain
    stored = core.store.get_batch(without.batch_id)
    assert stored is not None and stored.customer_ref == ""
    issues = [f for _, f in redis_client.xrange(STREAM) if f["action"] == "issue"]
    assert [(f["batch_id"], f["customer_ref"]) for f in issues] == [
        (with_ref.batch_id, "hubspot-12345"), (without.batch_id, "")]
