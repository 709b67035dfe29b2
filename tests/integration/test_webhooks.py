"""Issue 25, signed webhooks: link events reach every receiver, signed the Standard Webhooks
way, retried on the schedule with the same webhook-id, stopped by 410 Gone, and a receiver
that is down delays nothing else."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from standardwebhooks import WebhookVerificationError

from bot.cli import doctor
from bot.cli import webhooks as webhooks_cli
from bot.domain.store import ENDED_KEPT
from bot.exotel.sandbox import ExotelSandbox, Fault
from bot.exotel.tokens import mask
from bot.settings import LINK_TTL
from bot.slack.core import Core
from bot.slack.poller import CONCLUDE_AFTER
from testkit.receiver import SECRET, Receiver
from testkit.wait import wait_until
from tests.blockkit import block_text
from tests.support import REP, Bot, ThreadWorker, fire_due

LINK = re.compile(r"https://messaging\.exotel\.com/ua-links/isv-onboard/[0-9a-f-]+")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def hooks(receiver: Receiver, schedule: str = "1s,1s,1s") -> dict[str, Any]:
    return {"WEBHOOK_URLS": receiver.url, "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_RETRY_SCHEDULE": schedule}


def delivered(core: Core, receiver: Receiver, count: int, what: str) -> None:
    """Run due deliveries (and retries, once due) as the pool would, until `count` came."""
    wait_until(lambda: (fire_due(core), len(receiver.deliveries) >= count)[1], 20, what)


# 1. link.issued, verifiable ---------------------------------------------------------------


def test_each_link_of_a_command_reaches_the_receiver_signed_with_its_crm_reference(
    make_bot: Callable[..., Bot], receiver: Receiver
) -> None:
    bot = make_bot(**hooks(receiver))
    links = LINK.findall(block_text(bot.command("/onboard-link", "2 Hook Co ref:crm-42")
                                    .final()))
    assert len(links) == 2
    delivered(bot.core, receiver, 2, "two link.issued deliveries")
    fire_due(bot.core)
    assert len(receiver.deliveries) == 2  # one per link, no more
    events = [d.verified() for d in receiver.deliveries]  # standardwebhooks' own check
    assert [e["type"] for e in events] == ["link.issued", "link.issued"]
    assert sorted(e["data"]["link"] for e in events) == sorted(links)  # the full links
    for event in events:
        data = event["data"]
        assert data["customer_ref"] == "crm-42" and data["customer_note"] == "Hook Co"
        assert data["token_last4"] == data["link"][-4:] and data["status"] == "VALID"
        assert (data["requested_by"], data["team_id"]) == ("U0REP", "T0FAKE")
        assert data["sandbox"] is True and "used_at" not in data
        assert event["timestamp"].endswith("Z") and data["expires_at"].endswith("Z")
    assert len({d.id for d in receiver.deliveries}) == 2

    tampered = receiver.deliveries[0]
    body = tampered.body.replace(b"crm-42", b"crm-43")
    with pytest.raises(WebhookVerificationError):
        type(tampered)(tampered.headers, body).verified()
    state = bot.core.webhooks.state(receiver.url) if bot.core.webhooks else None
    assert state is not None and (state.delivered, state.pending, state.failing) == (2, 0, 0)


def test_without_webhook_urls_nothing_is_queued_and_no_worker_is_staffed(
    make_core: Callable[..., Core]
) -> None:
    from bot.engine.registry import WEBHOOKS_QUEUE
    from bot.runtime.worker import staffing

    core = make_core()
    core.onboarding.issue(REP, 1, "Quiet Co")
    assert core.webhooks is None and WEBHOOKS_QUEUE not in [q.name for q in core.queues]
    assert WEBHOOKS_QUEUE not in staffing(4) and staffing(4, webhooks=True)[WEBHOOKS_QUEUE] == 1


# 2. link.used and link.expired from the status poll ------------------------------------------


def test_the_status_poll_brings_one_link_used_and_one_link_expired(
    make_core: Callable[..., Core], receiver: Receiver, exotel: ExotelSandbox
) -> None:
    core = make_core(STATUS_POLL_SECONDS=1, **hooks(receiver))
    result = core.onboarding.issue(REP, 3, "Poll Co", customer_ref="crm-7")
    used, lapsed, valid = (link.token for link in result.links)
    delivered(core, receiver, 3, "the three link.issued")
    exotel.onboard(used, 5)
    exotel.tokens[lapsed].issued_at -= LINK_TTL + timedelta(minutes=1)  # Exotel: EXPIRED
    for _ in range(3):  # rounds overlapping or repeated: still one event each
        core.poller.poll_once()
        fire_due(core)
    delivered(core, receiver, 5, "link.used and link.expired")
    fire_due(core)
    [use] = [d.verified() for d in receiver.of_type("link.used")]
    [expiry] = [d.verified() for d in receiver.of_type("link.expired")]
    assert use["data"]["token_last4"] == used[-4:] and use["data"]["status"] == "USED"
    assert use["data"]["used_at"].endswith("Z") and use["data"]["customer_ref"] == "crm-7"
    assert expiry["data"]["token_last4"] == lapsed[-4:]
    assert expiry["data"]["status"] == "EXPIRED" and "used_at" not in expiry["data"]
    assert len(receiver.deliveries) == 5
    assert all(d.verified()["data"]["token_last4"] != valid[-4:]
               for d in receiver.deliveries[3:])


def test_links_whose_24_hours_end_get_a_last_look_used_at_the_last_minute_or_expired(
    make_core: Callable[..., Core], receiver: Receiver, exotel: ExotelSandbox,
    clock: FrozenDateTimeFactory
) -> None:
    """No poll saw these links in their last minutes; after their 24 h the status poll
    still asks Exotel once about each: one finished at the last minute (`link.used`), the
    other lapsed (`link.expired`, with the batch's reference)."""
    core = make_core(STATUS_POLL_SECONDS=1, **hooks(receiver))
    result = core.onboarding.issue(REP, 2, "Late Co", customer_ref="crm-8")
    late, lapsed = (link.token for link in result.links)
    delivered(core, receiver, 2, "the two link.issued")
    clock.tick(LINK_TTL - timedelta(minutes=1))
    exotel.onboard(late, 5)  # the customers finish a minute before the end
    clock.tick(timedelta(minutes=2))
    assert core.store.all_live_batches(10) == []  # over, to everyone but the status poll
    for _ in range(3):  # rounds repeated: still one event each
        core.poller.poll_once()
        fire_due(core)
    delivered(core, receiver, 4, "link.used and link.expired after the end")
    [use] = [d.verified() for d in receiver.of_type("link.used")]
    [expiry] = [d.verified() for d in receiver.of_type("link.expired")]
    assert use["data"]["token_last4"] == late[-4:]
    assert expiry["data"]["token_last4"] == lapsed[-4:]
    assert expiry["data"]["customer_ref"] == "crm-8" and expiry["data"]["status"] == "EXPIRED"
    assert len(receiver.deliveries) == 4


def test_a_link_whose_end_exotel_never_confirms_is_taken_as_expired_once(
    make_core: Callable[..., Core], receiver: Receiver, exotel: ExotelSandbox,
    clock: FrozenDateTimeFactory
) -> None:
    """Its tracked life ends unused while Exotel does not answer: the last look concludes
    EXPIRED by itself once CONCLUDE_AFTER has passed, before the keys lapse (ENDED_KEPT)."""
    core = make_core(STATUS_POLL_SECONDS=1, EXOTEL_DEADLINE="1", **hooks(receiver))
    [link] = core.onboarding.issue(REP, 1, "Silent Co", customer_ref="crm-9").links
    delivered(core, receiver, 1, "link.issued")
    clock.tick(LINK_TTL + timedelta(minutes=1))
    exotel.always = Fault(status=503)
    assert core.poller.poll_once().failed == 1  # no answer: nothing concluded yet
    fire_due(core)
    assert receiver.of_type("link.expired") == []
    clock.tick(CONCLUDE_AFTER)
    asked = len(exotel.calls_of("GET"))
    last_look = core.poller.poll_once()
    assert last_look.expired == [mask(link.token)] and last_look.checked == 0
    for _ in range(2):  # rounds repeated: concluded once
        assert core.poller.poll_once().expired == []
        fire_due(core)
    assert len(exotel.calls_of("GET")) == asked  # concluded without asking again
    delivered(core, receiver, 2, "link.expired by the bot's reckoning")
    [expiry] = [d.verified() for d in receiver.of_type("link.expired")]
    assert expiry["data"]["token_last4"] == link.token[-4:]
    assert expiry["data"]["customer_ref"] == "crm-9" and "used_at" not in expiry["data"]
    [record] = core.history.period(REP.team_id, None, link.issued_at - timedelta(minutes=1))
    assert record.status == "EXPIRED"
    assert len(receiver.deliveries) == 2
    assert CONCLUDE_AFTER < ENDED_KEPT


def test_forgetting_a_batch_brings_link_forgotten_for_each_link(
    make_core: Callable[..., Core], receiver: Receiver
) -> None:
    core = make_core(**hooks(receiver))
    result = core.onboarding.issue(REP, 2, "Forget Co")
    assert result.batch is not None
    core.onboarding.forget(REP, batch_id=result.batch.batch_id)
    delivered(core, receiver, 4, "two issued, two forgotten")
    forgotten = receiver.of_type("link.forgotten")
    assert sorted(d.verified()["data"]["token_last4"] for d in forgotten) == sorted(
        link.token[-4:] for link in result.links)


# 3. Retries on the schedule, the same webhook-id --------------------------------------------


def test_a_receiver_answering_500_then_200_gets_the_same_webhook_id_twice(
    make_core: Callable[..., Core], receiver: Receiver
) -> None:
    receiver.answers.extend([500])
    core = make_core(**hooks(receiver, "1s,1s"))
    core.onboarding.issue(REP, 1, "Retry Co")
    assert core.webhooks is not None
    delivered(core, receiver, 1, "the first attempt")
    state = core.webhooks.state(receiver.url)
    assert (state.pending, state.failing, state.last_error) == (1, 1, "HTTP 500")
    delivered(core, receiver, 2, "the retry, on the schedule")
    fire_due(core)
    first, second = receiver.deliveries
    assert first.id == second.id and first.body == second.body
    second.verified()  # signed afresh for its own attempt
    state = core.webhooks.state(receiver.url)
    assert (state.delivered, state.pending, state.failing) == (1, 0, 0)


def test_redirects_are_not_followed_and_retries_end_with_the_schedule(
    make_core: Callable[..., Core], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status, receiver.location = 302, receiver.url + "/elsewhere"
    core = make_core(**hooks(receiver, "1s"))
    core.onboarding.issue(REP, 1, "Redirect Co")
    assert core.webhooks is not None
    delivered(core, receiver, 2, "the attempt and its one retry")
    wait_until(lambda: (fire_due(core), core.webhooks.state(receiver.url).pending == 0)[1], 20,
               "the delivery given up")
    assert receiver.paths == ["POST /hooks", "POST /hooks"]  # the Location never followed
    state = core.webhooks.state(receiver.url)
    assert (state.gave_up, state.failing, state.last_error) == (1, 0, "HTTP 302")
    assert "must never log" not in caplog.text  # no response body in any log line
    # RQ logs a failed attempt's arguments as extra fields (LOG_FORMAT=json writes them):
    # the URL only by its key, the body sealed, so no full link and no note.
    failed = [r for r in caplog.records if getattr(r, "arguments", None)]
    assert failed and not any(receiver.url in json.dumps(r.arguments, default=str)
                              for r in failed)
    assert not any("Redirect Co" in json.dumps(vars(r), default=str)
                   or "isv-onboard" in json.dumps(vars(r), default=str) for r in failed)


# 4. 410 Gone, doctor, enable ----------------------------------------------------------------


def test_410_stops_deliveries_until_the_operator_enables_the_url_again(
    make_core: Callable[..., Core], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    receiver.status = 410
    core = make_core(**hooks(receiver))
    core.onboarding.issue(REP, 1, "Gone Co")
    assert core.webhooks is not None
    delivered(core, receiver, 1, "the 410")
    core.onboarding.issue(REP, 1, "Gone Co 2")
    fire_due(core)
    assert len(receiver.deliveries) == 1  # nothing more to that URL
    assert [r for r in caplog.records if "410 Gone" in r.getMessage()
            and r.name == "bot.domain.webhooks"] != []
    [check] = doctor.check_webhooks(core.settings)
    assert not check.ok and "410 Gone" in check.detail
    assert f"python -m bot webhooks enable {receiver.url}" in check.fix

    out = io.StringIO()
    assert webhooks_cli.run(core.settings, ["enable", receiver.url], out=out) == 0
    assert "deliveries resume" in out.getvalue()
    assert doctor.check_webhooks(core.settings)[0].ok
    receiver.status = 200
    core.onboarding.issue(REP, 1, "Back Co")
    delivered(core, receiver, 2, "a delivery after enabling")
    assert receiver.deliveries[-1].verified()["data"]["customer_note"] == "Back Co"


def test_webhooks_lists_counts_and_test_sends_a_test_event_to_each_url(
    make_core: Callable[..., Core], receiver: Receiver
) -> None:
    core = make_core(**hooks(receiver))
    receiver.answers.extend([500])
    core.onboarding.issue(REP, 1, "List Co")
    delivered(core, receiver, 1, "a failed attempt")
    out = io.StringIO()
    assert webhooks_cli.run(core.settings, [], out=out) == 0
    assert out.getvalue() == (f"{receiver.url}: ✓ enabled; 0 delivered, 1 pending, 1 failing; "
                              f"last error HTTP 500 at "
                              f"{core.webhooks.state(receiver.url).last_error_at}\n"
                              if core.webhooks else "")
    out = io.StringIO()
    assert webhooks_cli.run(core.settings, ["test"], out=out) == 0
    assert out.getvalue() == f"{receiver.url}: HTTP 200\n"
    assert receiver.deliveries[-1].verified()["type"] == "webhook.test"


# 5. A receiver that is down delays nothing -----------------------------------------------------


def test_a_receiver_that_never_answers_does_not_delay_issuing(
    make_bot: Callable[..., Bot], receiver: Receiver
) -> None:
    receiver.hang = True
    bot = make_bot(**hooks(receiver))
    assert bot.core.webhooks is not None
    deliveries = ThreadWorker(bot.core, [bot.core.webhooks.queue])  # the pool's webhook worker
    try:
        first = bot.command("/onboard-link", "1 Down Co").final()
        wait_until(lambda: receiver.holding == 1, 20, "a delivery held by the receiver")
        second = bot.command("/onboard-link", "1 Down Co 2 ref:crm-9").final()  # meanwhile
        assert LINK.search(block_text(first)) and LINK.search(block_text(second))
        assert receiver.holding == 1  # still held: the links came all the same
    finally:
        receiver.release()
        deliveries.stop()
    assert json.loads(receiver.deliveries[0].body)["type"] == "link.issued"
