"""The use cases on their own: `Onboarding` against in-memory stand-ins (testkit.memory) of
its store, Exotel, reminders, audit, quota, budget and status book. No Redis, no HTTP; time
is frozen and moved by hand."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from bot.domain.models import Batch, Requester
from bot.domain.onboarding import (
    AlreadyForgotten,
    AlreadyTracked,
    BatchGone,
    Interrupted,
    NotTrackable,
    NotYours,
)
from bot.domain.ratelimit import QuotaExceeded
from bot.domain.recording import RecordRetry
from bot.domain.store import StoreUnavailable
from bot.exotel.client import ExotelUnavailable, OnboardingLink
from bot.exotel.tokens import mask
from bot.settings import LINK_TTL
from testkit.memory import Killed, MemoryStore, MemoryWorld

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


@pytest.fixture
def written() -> Iterator[list[logging.LogRecord]]:
    """The bot's log records as its code wrote them. caplog's handler sits on the root
    logger after the run-wide filter (tests/conftest.py), which masks full tokens in each
    record first: a leak would not show there. This one sits on "bot", before it."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(logging.makeLogRecord({**vars(record), "msg": record.getMessage(),
                                                  "args": None}))

    handler, logger = Keep(logging.DEBUG), logging.getLogger("bot")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


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
        "batch_id": result.batch.batch_id, "count": 3, "tokens": [], "detail": "",
        "customer_ref": ""}


def test_a_crm_reference_is_kept_in_the_batch_and_in_every_audit_entry_about_it(
    world: MemoryWorld
) -> None:
    result = world.onboarding.issue(REP, 2, "ACME Corp", customer_ref="hubspot-12345")
    assert result.batch is not None and result.customer_ref == "hubspot-12345"
    stored = world.store.get_batch(result.batch.batch_id)
    assert stored is not None and stored.customer_ref == "hubspot-12345"
    batch_id = result.batch.batch_id
    world.onboarding.share(REP, batch_id)
    world.onboarding.stop_reminders(REP, batch_id)
    world.onboarding.forget(REP, batch_id=batch_id)
    assert [(e["action"], e["batch_id"], e["customer_ref"]) for e in world.audit.entries] == [
        ("issue", batch_id, "hubspot-12345"), ("share", batch_id, "hubspot-12345"),
        ("stop_reminders", batch_id, "hubspot-12345"), ("forget", batch_id, "hubspot-12345")]
    world.onboarding.refused(REP, "onboard-link", "not on the list")
    assert world.audit.entries[-1]["customer_ref"] == ""  # nothing of a batch


def test_renewing_keeps_the_crm_reference(world: MemoryWorld) -> None:
    first = world.onboarding.issue(REP, 1, "ACME", customer_ref="crm-42").batch
    assert first is not None
    renewed = world.onboarding.renew(OTHER, first.batch_id)
    assert renewed is not None and renewed.batch is not None
    assert (renewed.batch.customer_ref, renewed.batch.note) == ("crm-42", "ACME")
    assert world.audit.entries[-1]["action"] == "renew"
    assert world.audit.entries[-1]["customer_ref"] == "crm-42"


def test_the_audit_of_an_issue_keeps_the_reference_without_a_batch_or_over_the_quota(
    world: MemoryWorld
) -> None:
    world.exotel.script = [DOWN]  # nothing made: no batch
    result = world.onboarding.issue(REP, 1, "ACME", customer_ref="crm-7")
    assert result.batch is None
    assert world.audit.entries[-1]["customer_ref"] == "crm-7"
    with pytest.raises(QuotaExceeded):
        world.onboarding.issue(REP, 10_000, "ACME", customer_ref="crm-8")
    assert (world.audit.entries[-1]["outcome"], world.audit.entries[-1]["customer_ref"]) == (
        "quota", "crm-8")


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

    world.exotel.meanwhile = [redis_stops(world)]  # for good: the two go untracked
    untracked = world.onboarding.issue(REP, 2, "ACME")
    assert untracked.links == [] and len(untracked.untracked) == 2
    assert charged(world) == 3

    world.store.down = False
    assert len(world.onboarding.issue(REP, 2, "ACME").links) == 2
    made = len(world.exotel.made)
    with pytest.raises(QuotaExceeded):
        world.onboarding.issue(REP, 1, "ACME")
    assert len(world.exotel.made) == made  # refused before Exotel is asked
    assert world.audit.outcomes("issue")[-1] == "quota"


def redis_stops(world: MemoryWorld, for_seconds: float | None = None) -> Callable[[], None]:
    """Redis stops while Exotel makes a link, and is back `for_seconds` later (of the retry
    clock, which only recording's pauses move) or never."""
    def stop() -> None:
        world.store.down = True
        if for_seconds is not None:
            world.retry_clock.at(world.retry_clock.now + for_seconds,
                                 lambda: setattr(world.store, "down", False))
    return stop


# Recording while Redis does not answer ----------------------------------------------------


def test_a_link_made_during_a_brief_outage_is_recorded_once_redis_is_back(
    world: MemoryWorld
) -> None:
    world.exotel.meanwhile = [redis_stops(world, for_seconds=3.0)]
    result = world.onboarding.issue(REP, 2, "ACME")
    assert world.retry_clock.slept == [0.2, 0.4, 0.8, 1.6]  # doubling, until it answered
    assert result.untracked == [] and len(result.links) == 2 and result.failed == 0
    tokens = [link.token for link in result.links]
    assert result.batch is not None and result.batch.tokens == tokens
    stored = world.store.get_batch(result.batch.batch_id)
    assert stored is not None and stored.tokens == tokens
    assert {s.status for s in world.statuses.get_many(tokens).values()} == {"VALID"}
    assert charged(world) == 2
    assert result.batch.batch_id in world.reminders.scheduled
    assert world.audit.entries[-1]["detail"] == ""


def test_a_retry_after_writes_that_landed_adds_no_second_token_or_charge(
    world: MemoryWorld
) -> None:
    world.store.lose = ["batch", "quota", "status"]  # each lands, its answer lost on the way
    result = world.onboarding.issue(REP, 1, "ACME")
    assert len(world.retry_clock.slept) == 3  # one retry for each lost answer
    [link] = result.links
    assert result.batch is not None
    stored = world.store.get_batch(result.batch.batch_id)
    assert stored is not None and stored.tokens == [link.token]
    assert charged(world) == 1
    assert world.statuses.issued_links == [link]


def test_redis_back_at_the_bound_itself_still_records(world: MemoryWorld) -> None:
    world.exotel.meanwhile = [redis_stops(world, for_seconds=30.0)]
    result = world.onboarding.issue(REP, 1, "ACME")
    assert world.retry_clock.now == pytest.approx(30.0)
    assert len(result.links) == 1 and result.untracked == []


def test_past_the_bound_a_link_is_shown_untracked_and_logged_masked(
    world: MemoryWorld, caplog: pytest.LogCaptureFixture, written: list[logging.LogRecord]
) -> None:
    world.exotel.meanwhile = [redis_stops(world)]
    with caplog.at_level(logging.INFO):
        result = world.onboarding.issue(REP, 1, "ACME secret customer", batch_id="b-down")
    assert world.retry_clock.now == pytest.approx(30.0)  # tried until the bound, no longer
    [made] = world.exotel.made
    [untracked] = result.untracked
    assert (untracked.url, untracked.token, untracked.requester, untracked.batch_id) == (
        made.url, made.token, REP, "b-down")
    assert untracked.note == "ACME secret customer" and untracked.expires_at == T0 + LINK_TTL
    assert result.links == [] and result.batch is None and result.failed == 0
    assert charged(world) == 0 and world.reminders.scheduled == {}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
              and "NOT tracked" in r.getMessage()]
    assert len(errors) == 1
    assert mask(made.token) in errors[0] and "U0REP" in errors[0] and "b-down" in errors[0]
    assert "python -m bot track" in errors[0] and "ACME" not in errors[0]
    assert made.token not in caplog.text
    assert written and not [r for r in written if made.token in r.getMessage()]


def test_links_before_the_outage_stay_tracked_without_a_reminder_the_rest_untracked(
    world: MemoryWorld
) -> None:
    world.exotel.meanwhile = [None, redis_stops(world)]
    result = world.onboarding.issue(REP, 3, "ACME")
    assert world.retry_clock.now == pytest.approx(30.0)  # the third went untracked at once
    assert len(result.links) == 1 and len(result.untracked) == 2 and result.failed == 0
    assert result.no_reminder and result.reminder_due is None
    assert world.reminders.scheduled == {}
    assert charged(world) == 1


def test_the_audit_records_untracked_links_when_it_can_be_written(world: MemoryWorld) -> None:
    world.audit.redis = MemoryStore()  # the audit's writes get through; recording's do not
    world.exotel.meanwhile = [redis_stops(world)]
    result = world.onboarding.issue(REP, 2, "ACME", batch_id="b-down")
    masked = [mask(link.token) for link in result.untracked]
    entry = world.audit.entries[-1]
    assert (entry["action"], entry["count"], entry["batch_id"]) == ("issue", 2, "b-down")
    assert entry["tokens"] == masked and entry["detail"] == f"not tracked: {','.join(masked)}"


def test_a_redis_that_answers_with_an_error_is_not_waited_for(world: MemoryWorld) -> None:
    def refuse(*_: object) -> None:
        raise StoreUnavailable("MISCONF")  # Redis answered: no point asking again

    world.exotel.meanwhile = [lambda: setattr(world.store, "write", refuse)]
    result = world.onboarding.issue(REP, 1, "ACME")
    assert world.retry_clock.slept == [] and len(result.untracked) == 1


def test_the_bound_is_the_exotel_deadline_and_a_margin() -> None:
    assert RecordRetry.past(20.0).within == 30.0


# Tracking a link by hand (python -m bot track) ---------------------------------------------


def a_link(token: str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0") -> OnboardingLink:
    return OnboardingLink(url=f"https://messaging.exotel.com/ua-links/isv-onboard/{token}",
                          token=token)


def test_track_records_a_one_link_batch_as_issued_without_charging_the_quota(
    world: MemoryWorld
) -> None:
    issued_at = T0 - timedelta(hours=2)
    batch = world.onboarding.track(REP, a_link(), "ACME", issued_at)
    assert (batch.tokens, batch.issued_at, batch.expires_at) == (
        [a_link().token], issued_at, issued_at + LINK_TTL)
    assert batch.reminder_due == issued_at + LINK_TTL - timedelta(hours=1)
    assert world.store.get_batch(batch.batch_id) == batch
    link = world.store.get_link(a_link().token)
    assert link is not None and (link.url, link.batch_id, link.note) == (
        a_link().url, batch.batch_id, "ACME")
    assert world.statuses.get_many([link.token])[link.token].status == "VALID"
    assert world.reminders.scheduled == {batch.batch_id: batch.reminder_due}
    assert world.store.note_index_get(REP, "acme") == batch.batch_id
    assert charged(world) == 0
    assert world.audit.entries[-1] | {"batch_id": ""} == {
        "action": "track", "outcome": "ok", "user_id": "U0REP", "batch_id": "", "count": 1,
        "tokens": [mask(a_link().token)], "detail": f"issued {issued_at.isoformat()}",
        "customer_ref": ""}
    assert world.exotel.made == []  # Exotel is not asked


def test_track_leaves_a_tracked_link_alone_and_refuses_one_past_its_day(
    world: MemoryWorld
) -> None:
    first = world.onboarding.track(REP, a_link(), "ACME", T0)
    with pytest.raises(AlreadyTracked) as known:
        world.onboarding.track(OTHER, a_link(), "Globex", T0)
    assert known.value.link.batch_id == first.batch_id
    assert world.store.get_link(a_link().token) == known.value.link
    assert world.audit.outcomes("track") == ["ok", "already"]

    with pytest.raises(NotTrackable, match="24 hours ended"):
        world.onboarding.track(REP, a_link("1234abcd"), "", T0 - LINK_TTL)
    with pytest.raises(NotTrackable, match="future"):
        world.onboarding.track(REP, a_link("1234abcd"), "", T0 + timedelta(hours=1))
    assert world.store.get_link("1234abcd") is None


def test_track_reminds_soon_when_the_reminder_was_due_already(world: MemoryWorld) -> None:
    batch = world.onboarding.track(REP, a_link(), "", T0 - LINK_TTL + timedelta(minutes=20))
    assert batch.reminder_due == T0 + timedelta(seconds=30)  # after its batch is written


def test_track_with_redis_down_tracks_nothing(world: MemoryWorld) -> None:
    world.store.down = True
    with pytest.raises(StoreUnavailable):
        world.onboarding.track(REP, a_link(), "ACME", T0)
    world.store.down = False
    assert world.store.get_link(a_link().token) is None


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


def test_a_crm_reference_asked_for_must_be_the_live_batchs_own(world: MemoryWorld) -> None:
    with_ref = world.onboarding.issue(REP, 1, "ACME", customer_ref="crm-1").batch
    assert with_ref is not None
    found = world.onboarding.existing(REP, 1, "acme", "CRM-1")  # case aside, the same
    assert found is not None and found[0].batch_id == with_ref.batch_id
    assert world.onboarding.existing(REP, 1, "ACME") is not None  # no reference: the note
    assert world.onboarding.existing(REP, 1, "ACME", "crm-2") is None  # another record
    without = issued(world, 1, "Globex")
    assert world.onboarding.existing(REP, 1, "Globex", "crm-3") is None  # it has none
    assert world.onboarding.existing(REP, 1, "Globex") is not None
    assert without.customer_ref == ""


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
