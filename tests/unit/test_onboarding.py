"""The use cases on their own: `Onboarding` against in-memory stand-ins (testkit.memory) of
its store, Exotel, reminders, audit, quota, budget and status book. No Redis, no HTTP; time
is frozen and moved by hand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from bot.domain.models import Batch, Requester
from bot.domain.onboarding import AlreadyForgotten, BatchGone, Interrupted, NotYours
from bot.domain.ratelimit import QuotaExceeded
from bot.exotel.client import ExotelUnavailable, NotRecorded
from bot.settings import LINK_TTL
from testkit.memory import Killed, MemoryWorld

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
REP = Requester(team_id="T0FAKE", user_id="U0REP", channel_id="C0SALES")
OTHER = REP.model_copy(update={"user_id": "U0OTHER"})
ADMIN = REP.model_copy(update={"user_id": "U0ADMIN"})
DOWN = ExotelUnavailable("Exotel is down")


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0) as frozen:
        yield frozen


@pytest.fixture
def world(clock: FrozenDateTimeFactory) -> MemoryWorld:
    return MemoryWorld(admins=[ADMIN.user_id])


def issued(world: MemoryWorld, count: int = 2, note: str = "ACME") -> Batch:
    batch = world.onboarding.issue(REP, count, note).batch
    assert batch is not None
    return batch


def charged(world: MemoryWorld, requester: Requester = REP) -> int:
    return world.quota.charged.get((requester.team_id, requester.user_id), 0)


# Issuing ----------------------------------------------------------------------------------


def test_issued_links_are_recorded_valid_with_their_batch_reminder_and_note(
    world: MemoryWorld
) -> None:
    result = world.onboarding.issue(REP, 3, "ACME Corp")
    assert result.batch is not None and len(result.links) == 3 and result.failed == 0
    tokens = [link.token for link in result.links]
    stored = world.store.get_batch(result.batch.batch_id)
    assert stored is not None and stored.tokens == tokens
    assert [world.store.get_link(t) for t in tokens] == result.links
    assert {(s.status, s.checked_at) for s in world.statuses.get_many(tokens).values()} == {
        ("VALID", T0)}
    assert world.reminders.scheduled == {result.batch.batch_id: T0 + LINK_TTL - timedelta(hours=1)}
    assert world.store.note_index_get(REP, "ACME Corp") == result.batch.batch_id
    assert charged(world) == 3
    assert world.audit.entries[-1] | {"tokens": []} == {
        "action": "issue", "outcome": "ok", "user_id": "U0REP",
        "batch_id": result.batch.batch_id, "count": 3, "tokens": [], "detail": ""}


def test_links_exotel_failed_are_counted_with_their_reason_and_the_rest_are_kept(
    world: MemoryWorld
) -> None:
    world.exotel.script = [None, DOWN, None, DOWN, None]
    result = world.onboarding.issue(REP, 5, "ACME")
    assert len(result.links) == 3 and result.failed == 2
    assert result.reasons() == [("Exotel is down", 2)]
    assert result.batch is not None and len(result.batch.tokens) == 3
    assert len(world.statuses.issued_links) == 3
    assert world.audit.outcomes("issue") == ["2 failed"]


def test_a_command_killed_half_way_leaves_what_it_made_tracked_and_accounted_for(
    world: MemoryWorld
) -> None:
    world.exotel.script = [None, None, Killed()]
    with pytest.raises(Killed):
        world.onboarding.issue(REP, 3, "ACME", batch_id="cut-short")
    stored = world.store.get_batch("cut-short")
    assert stored is not None and len(stored.tokens) == 2  # each recorded as it came
    assert world.reminders.scheduled == {}

    result = world.onboarding.account_for(REP, 3, "ACME", "cut-short")
    assert [link.token for link in result.links] == stored.tokens
    assert result.failed == 1 and isinstance(result.errors[0], Interrupted)
    assert "cut-short" in world.reminders.scheduled
    assert charged(world) == 2


def test_only_links_made_and_recorded_are_charged_to_the_quota(world: MemoryWorld) -> None:
    world.quota.per_day = 5
    world.exotel.script = [None, DOWN, None, DOWN, None]
    world.onboarding.issue(REP, 5, "ACME")
    assert charged(world) == 3  # the two Exotel failed cost nothing

    world.store.down = True  # Exotel makes them, the store cannot record them: withheld
    withheld = world.onboarding.issue(REP, 2, "ACME")
    assert withheld.links == [] and all(isinstance(e, NotRecorded) for e in withheld.errors)
    assert charged(world) == 3

    world.store.down = False
    assert len(world.onboarding.issue(REP, 2, "ACME").links) == 2
    made = len(world.exotel.made)
    with pytest.raises(QuotaExceeded):
        world.onboarding.issue(REP, 1, "ACME")
    assert len(world.exotel.made) == made  # refused before Exotel is asked
    assert world.audit.outcomes("issue")[-1] == "quota"


# One live batch per customer ---------------------------------------------------------------


def test_the_same_customer_note_in_other_case_and_spacing_finds_the_live_batch(
    world: MemoryWorld
) -> None:
    world.onboarding.issue(REP, 2, "ACME Corp")
    newest = issued(world, 2, "ACME Corp")
    found = world.onboarding.existing(REP, 2, "  acme   CORP ")
    assert found is not None
    batch, live = found
    assert batch.batch_id == newest.batch_id
    assert [(link.token, record and record.status) for link, record in live] == [
        (token, "VALID") for token in newest.tokens]
    assert world.audit.outcomes("issue_repeat") == ["ok"]

    assert world.onboarding.existing(REP, 3, "ACME Corp") is None  # more than are unused
    assert world.onboarding.existing(OTHER, 1, "ACME Corp") is None  # someone else's
    assert world.onboarding.existing(REP, 1, "Globex") is None
    assert world.onboarding.existing(REP, 1, "  ") is None  # no note, no customer


def test_used_and_expired_links_do_not_count_as_live(world: MemoryWorld) -> None:
    result = world.onboarding.issue(REP, 2, "ACME")
    used, other = result.links
    world.statuses.record(used, "USED")
    assert world.onboarding.existing(REP, 2, "ACME") is None
    found = world.onboarding.existing(REP, 1, "ACME")
    assert found is not None and [link for link, _ in found[1]] == [other]
    world.statuses.record(other, "EXPIRED")
    assert world.onboarding.existing(REP, 1, "ACME") is None


def test_a_batch_past_its_life_is_not_offered_again(
    world: MemoryWorld, clock: FrozenDateTimeFactory
) -> None:
    world.onboarding.issue(REP, 1, "ACME")
    clock.move_to(T0 + LINK_TTL - timedelta(seconds=1))
    assert world.onboarding.existing(REP, 1, "ACME") is not None
    clock.move_to(T0 + LINK_TTL)
    assert world.onboarding.existing(REP, 1, "ACME") is None


# Forgetting -------------------------------------------------------------------------------


def test_forgetting_links_one_by_one_stops_the_reminder_with_the_last(
    world: MemoryWorld
) -> None:
    batch = issued(world)
    first, second = batch.tokens
    assert world.onboarding.forget(REP, token=first).token == first
    left = world.store.get_batch(batch.batch_id)
    assert left is not None and left.tokens == [second]
    assert world.store.get_link(first) is None and world.reminders.stopped == set()

    world.onboarding.forget(REP, token=second)
    assert world.store.get_batch(batch.batch_id) is None
    assert world.reminders.stopped == {batch.batch_id}
    assert world.audit.outcomes("forget") == ["ok", "ok"]


def test_forgetting_a_batch_drops_it_its_links_and_its_reminder(world: MemoryWorld) -> None:
    batch = issued(world)
    assert world.onboarding.forget(REP, batch_id=batch.batch_id).batch.batch_id == batch.batch_id
    assert world.store.get_batch(batch.batch_id) is None
    assert all(world.store.get_link(t) is None for t in batch.tokens)
    assert world.reminders.stopped == {batch.batch_id}
    assert world.onboarding.live(REP, "user", 10).total == 0


def test_forgetting_again_says_so_until_the_links_would_have_expired(
    world: MemoryWorld, clock: FrozenDateTimeFactory
) -> None:
    batch = issued(world)
    world.onboarding.forget(REP, token=batch.tokens[0])
    world.onboarding.forget(REP, batch_id=batch.batch_id)
    with pytest.raises(AlreadyForgotten):
        world.onboarding.forget(REP, batch_id=batch.batch_id)
    with pytest.raises(AlreadyForgotten):
        world.onboarding.forget(OTHER, token=batch.tokens[0])  # whoever asks
    assert world.audit.outcomes("forget")[-2:] == ["already", "already"]

    with pytest.raises(BatchGone) as never:
        world.onboarding.forget(REP, token="never-issued")
    assert not isinstance(never.value, AlreadyForgotten)

    clock.move_to(batch.expires_at + timedelta(seconds=2))
    with pytest.raises(BatchGone) as expired:
        world.onboarding.forget(REP, batch_id=batch.batch_id)
    assert not isinstance(expired.value, AlreadyForgotten)


def test_only_the_requester_or_an_admin_may_forget(world: MemoryWorld) -> None:
    batch = issued(world)
    with pytest.raises(NotYours):
        world.onboarding.forget(OTHER, batch_id=batch.batch_id)
    with pytest.raises(NotYours):
        world.onboarding.forget(OTHER, token=batch.tokens[0])
    assert world.store.get_batch(batch.batch_id) == batch
    assert [(e["user_id"], e["outcome"], e["detail"]) for e in world.audit.entries
            if e["action"] == "forget"] == [("U0OTHER", "refused", "not theirs")] * 2
    world.onboarding.forget(ADMIN, batch_id=batch.batch_id)
    assert world.store.get_batch(batch.batch_id) is None


# Stopping reminders and sharing -------------------------------------------------------------


def test_stop_reminders_says_whether_this_click_stopped_them(world: MemoryWorld) -> None:
    batch = issued(world, 1)
    with pytest.raises(NotYours):
        world.onboarding.stop_reminders(OTHER, batch.batch_id)
    assert world.reminders.stopped == set()
    assert world.onboarding.stop_reminders(REP, batch.batch_id) is True
    assert world.onboarding.stop_reminders(REP, batch.batch_id) is False
    assert world.audit.outcomes("stop_reminders") == ["refused", "ok", "already"]
    with pytest.raises(BatchGone):
        world.onboarding.stop_reminders(REP, "0" * 32)


def test_a_batch_is_shared_once_unless_the_post_failed(world: MemoryWorld) -> None:
    batch = issued(world)
    shared = world.onboarding.share_once(REP, batch.batch_id)
    assert shared is not None and [link.token for link in shared[1]] == batch.tokens
    assert world.onboarding.share_once(REP, batch.batch_id) is None  # a double click
    world.onboarding.share_failed(batch.batch_id)
    assert world.onboarding.share_once(REP, batch.batch_id) is not None
