"""Issue 14: a rep can always see their links, and hears when a customer has finished.

Links back in `list` and App Home, the status poller and its DM, one live link per customer,
the funnel, idempotent buttons, "not tracked" for forgotten links, sandbox notes everywhere.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
from freezegun.api import FrozenDateTimeFactory
from rq.registry import ScheduledJobRegistry

from bot.exotel.client import talks_to_exotel
from bot.exotel.sandbox import ExotelSandbox
from bot.runtime import jobs
from bot.slack import messages, poller
from bot.slack.core import Core
from bot.slack.linkviews import ISSUE_ANYWAY_ACTION
from bot.slack.messages import FORGET_ACTION, SHARE_ACTION, STOP_ACTION
from testkit.slack import FakeSlack
from testkit.wait import wait_until
from tests.blockkit import block_text
from tests.support import REP, Bot, fire_due

LINK = re.compile(r"https://messaging\.exotel\.com/ua-links/isv-onboard/([0-9a-f-]+)")


def tokens_in(message: dict[str, Any]) -> list[str]:
    return LINK.findall(block_text(message))


def button_value(message: dict[str, Any], action_id: str) -> str:
    blocks = message["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    for block in blocks:
        for element in [*block.get("elements", []), block.get("accessory") or {}]:
            if element.get("action_id") == action_id:
                return element["value"]
    raise AssertionError(f"no {action_id} button")


def gets_of(exotel: ExotelSandbox, token: str) -> int:
    return sum(1 for c in exotel.calls_of("GET") if c.query.get("access_token") == [token])


def dms(slack: FakeSlack) -> list[dict[str, Any]]:
    return [c.params for c in slack.calls("chat.postMessage")
            if str(c.params.get("channel")).startswith("D")]


# 1. Links back ---------------------------------------------------------------------------


def test_list_and_app_home_show_both_full_links_with_their_status(
    bot: Bot, slack: FakeSlack
) -> None:
    tokens = tokens_in(bot.command("/onboard-link", "2 Lifecycle Co").final())
    assert len(tokens) == 2
    bot.core.poller.poll_once()  # what the background poll does every few minutes

    listing = bot.command("/onboard-link", "list").ack
    text = block_text(listing)
    for token in tokens:
        assert f"https://messaging.exotel.com/ua-links/isv-onboard/{token}" in text
    assert text.count("VALID (checked just now)") == 2 and "Lifecycle Co" in text
    assert "h " in text and "left" in text  # time left

    published = len(slack.calls("views.publish"))  # issuing refreshed it already
    bot.event({"type": "app_home_opened", "user": "U0REP", "tab": "home"})
    wait_until(lambda: len(slack.calls("views.publish")) > published, 10, "App Home published")
    home = json.dumps(slack.calls("views.publish")[-1].params["view"])
    for token in tokens:
        assert token in home
    assert home.count("VALID (checked just now)") == 2

    # Someone else's listing of the channel: masked tokens only.
    other = block_text(bot.command("/onboard-link", "list channel", user_id="U0OTHER").ack)
    assert "Lifecycle Co" in other
    assert all(token not in other and f"…{token[-4:]}" in other for token in tokens)


def test_list_and_app_home_show_the_crm_reference_of_each_batch(
    bot: Bot, slack: FakeSlack
) -> None:
    bot.command("/onboard-link", "1 Lifecycle Co ref:crm_7*x*").final()
    bot.command("/onboard-link", "1 Other Co").final()
    # Made inert as the note is: formatting characters become lookalikes.
    line = "*Lifecycle Co* (CRM ref crm\u02cd7\u2217x\u2217): 1 link"
    listing = block_text(bot.command("/onboard-link", "list").ack)
    assert line in listing and "*Other Co*: 1 link" in listing
    assert listing.count("CRM ref") == 1

    published = len(slack.calls("views.publish"))
    bot.event({"type": "app_home_opened", "user": "U0REP", "tab": "home"})
    wait_until(lambda: len(slack.calls("views.publish")) > published, 10, "App Home published")
    home = json.dumps(slack.calls("views.publish")[-1].params["view"], ensure_ascii=False)
    assert json.dumps(line, ensure_ascii=False)[1:-1] in home and home.count("CRM ref") == 1


def test_links_list_as_valid_as_soon_as_exotel_returns_them(
    bot: Bot, exotel: ExotelSandbox
) -> None:
    tokens = tokens_in(bot.command("/onboard-link", "2 Fresh Co").final())
    text = block_text(bot.command("/onboard-link", "list").ack)
    assert len(tokens) == 2 and text.count("VALID (checked just now)") == 2
    assert "not checked yet" not in text
    assert exotel.calls_of("GET") == []  # Exotel's answer to issuing, not a poll
    funnel = bot.core.statuses.funnel("T0FAKE", "U0REP")
    assert (funnel.issued, funnel.used) == (2, 0)  # counted issued, not used


# 2. The completion signal ----------------------------------------------------------------


def test_a_used_link_brings_one_dm_within_three_polls_and_the_reminder_shows_it(
    make_core: Callable[..., Core], slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    core = make_core()
    result = core.onboarding.issue(REP, 2, "Lifecycle Co")
    used, other = (link.token for link in result.links)
    assert core.poller.poll_once().checked == 2 and dms(slack) == []  # still VALID
    exotel.onboard(used, 5)
    for _ in range(3):
        if dms(slack):
            break
        core.poller.poll_once()
    gets = gets_of(exotel, used)
    for _ in range(3):
        core.poller.poll_once()
    assert gets_of(exotel, used) == gets  # USED: polled no more
    [dm] = dms(slack)  # exactly one, however many rounds
    text = block_text(dm)
    assert dm["channel"] == "DU0REP" and "Lifecycle Co" in text
    assert f"…{used[-4:]}" in text and used not in text
    assert f"…{other[-4:]}" in text and "VALID" in text  # the rest of the batch
    assert "[sandbox]" in dm["text"]

    assert result.batch is not None and result.reminder_due is not None
    core.reminder_sender.send(result.batch.batch_id, result.reminder_due)
    [reminder] = [c.params for c in slack.calls("chat.postMessage")
                  if c.params["channel"] == "C0SALES"]
    shown = block_text(reminder)
    assert f"`…{used[-4:]}`: :white_check_mark: USED" in shown
    assert gets_of(exotel, used) == gets  # the reminder did not ask again either
    assert "[sandbox]" in reminder["text"]


@pytest.mark.slow
def test_the_rq_poll_chain_brings_the_dm_within_three_intervals(
    make_core: Callable[..., Core], slack: FakeSlack, exotel: ExotelSandbox,
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.runtime.execution")  # rounds: DEBUG lines
    core = make_core(STATUS_POLL_SECONDS=1)
    result = core.onboarding.issue(REP, 2, "Lifecycle Co")
    poller.start_polling(core.poller.queue, 1)
    poller.start_polling(core.poller.queue, 1)  # a second worker joins the same chain

    def rounds() -> int:  # poll rounds done, each logged once by the RQ job
        return sum(r.getMessage().startswith("poll_statuses: checked") for r in caplog.records)

    wait_until(lambda: (fire_due(core), rounds() >= 1)[1], 20, "a first poll round")
    assert dms(slack) == []
    exotel.onboard(result.links[0].token, 5)
    before = rounds()
    wait_until(lambda: (fire_due(core), dms(slack))[1], 20, "the DM")
    assert rounds() - before <= 3
    wait_until(lambda: (fire_due(core), rounds() >= before + 5)[1], 20, "more rounds")
    assert len(dms(slack)) == 1


def test_status_polls_take_only_their_share_and_only_what_issuing_leaves(
    make_core: Callable[..., Core], exotel: ExotelSandbox, redis_client: redis.Redis
) -> None:
    core = make_core(EXOTEL_RATE_PER_MINUTE=40, STATUS_POLL_SHARE=0.25)  # 10 a minute
    core.onboarding.issue(REP, 30, "Big Co")  # 30 of the window's 40: 10 left, reserve 30
    first = core.poller.poll_once()
    assert first.checked == 0 and first.out_of_budget and exotel.calls_of("GET") == []

    # A minute later (the account's window emptied): the poller takes its share and no more.
    for key in redis_client.scan_iter("*exotel:acme1*"):
        if ":poll" not in key:
            redis_client.delete(key)
    second = core.poller.poll_once()
    assert second.checked == 10 and len(exotel.calls_of("GET")) == 10
    assert core.poller.poll_once().checked == 0  # its own minute is spent
    assert len(exotel.calls_of("GET")) == 10
    # Issuing still has the rest of the window.
    assert len(core.onboarding.issue(REP, 30, "Next Co").links) == 30


def test_the_poll_chain_is_one_job_per_slot_whoever_starts_it(
    make_core: Callable[..., Core]
) -> None:
    core = make_core(STATUS_POLL_SECONDS=300)
    for _ in range(3):  # three workers start
        poller.start_polling(core.poller.queue, 300)
    registry = ScheduledJobRegistry(queue=core.poller.queue)
    ids = [i for i in registry.get_job_ids() if i.startswith("status-poll-")]
    assert len(ids) == 1
    slot = int(ids[0].rsplit("-", 1)[1])
    jobs.poll_statuses(slot)  # a round reschedules the same next slot
    jobs.poll_statuses(slot)  # run twice: polls once, still one job
    assert [i for i in registry.get_job_ids() if i.startswith("status-poll-")] == ids


# 3. One live link per customer ------------------------------------------------------------


def test_issuing_again_for_a_customer_answers_with_the_live_link_and_a_button(
    bot: Bot, exotel: ExotelSandbox
) -> None:
    [token] = tokens_in(bot.command("/onboard-link", "1 Lifecycle Co").final())
    assert len(exotel.calls_of("POST")) == 1

    repeat = bot.command("/onboard-link", "1  lifecycle CO ")
    again = repeat.ack  # answered at once: no "Creating…" promise for links never made
    assert tokens_in(again) == [token] and "already have" in block_text(again)
    assert "Creating" not in block_text(again) and not repeat.slack.replies(repeat.name)
    assert len(exotel.calls_of("POST")) == 1  # no Exotel call for the repeat

    value = button_value(again, ISSUE_ANYWAY_ACTION)
    [new] = tokens_in(bot.click(ISSUE_ANYWAY_ACTION, value).final())
    assert new != token and len(exotel.calls_of("POST")) == 2
    # Which links count as live for a customer: tests/unit/test_onboarding.py.


# 4-6. Idempotent buttons, "not tracked" ----------------------------------------------------


def test_stop_twice_then_forget_twice_gives_four_truthful_replies(bot: Bot) -> None:
    issued = bot.command("/onboard-link", "1 Lifecycle Co").final()
    batch_id = button_value(issued, STOP_ACTION)
    answers = [block_text(bot.click(action, batch_id).final())
               for action in (STOP_ACTION, STOP_ACTION, FORGET_ACTION, FORGET_ACTION)]
    assert "No more reminders" in answers[0]
    assert "already stopped" in answers[1]
    assert "no longer tracks" in answers[2]
    assert "already forgotten" in answers[3]
    assert not any("went wrong" in a or "expired" in a for a in answers)


def test_stop_then_forget_the_batchs_last_link_by_its_url(bot: Bot) -> None:
    issued = bot.command("/onboard-link", "1 Lifecycle Co").final()
    [token] = tokens_in(issued)
    bot.click(STOP_ACTION, button_value(issued, STOP_ACTION)).final()
    url = f"https://messaging.exotel.com/ua-links/isv-onboard/{token}"
    assert "no longer tracks" in block_text(bot.command("/onboard-link", f"forget {url}").final())
    again = block_text(bot.command("/onboard-link", f"forget {url}").final())
    assert "already forgotten" in again


def test_post_to_channel_twice_posts_once(bot: Bot, slack: FakeSlack) -> None:
    issued = bot.command("/onboard-link", "2 Lifecycle Co").final()
    batch_id = button_value(issued, SHARE_ACTION)
    first = block_text(bot.click(SHARE_ACTION, batch_id).final())
    second = block_text(bot.click(SHARE_ACTION, batch_id).final())
    assert "Posted the links" in first and "already posted" in second
    [post] = [c.params for c in slack.calls("chat.postMessage")]
    assert post["channel"] == "C0SALES"
    assert "[sandbox]" in post["text"]  # a channel post from the sandbox says so


def test_check_token_of_a_forgotten_link_is_not_tracked_with_exotels_status(
    bot: Bot
) -> None:
    [token] = tokens_in(bot.command("/onboard-link", "1 Lifecycle Co").final())
    bot.command("/onboard-link", f"forget {token}").final()
    text = block_text(bot.command("/check-token", token).final())
    assert "not tracked by this bot" in text and "VALID" in text
    assert "expired" not in text.lower()


def test_a_button_on_links_never_tracked_does_not_call_them_expired(bot: Bot) -> None:
    text = block_text(bot.click(FORGET_ACTION, "0" * 32).final())
    assert "not tracked by this bot" in text and "have expired" not in text


# 7. The funnel ----------------------------------------------------------------------------


def test_app_home_funnel_counts_what_was_issued_and_used(
    make_core: Callable[..., Core], clock: FrozenDateTimeFactory, slack: FakeSlack,
    exotel: ExotelSandbox, redis_client: redis.Redis
) -> None:
    core = make_core(ADMIN_USER_IDS="U0REP")
    mine = core.onboarding.issue(REP, 3, "Funnel Co")
    core.onboarding.issue(REP.model_copy(update={"user_id": "U0OTHER"}), 1, "Theirs")
    clock.tick(timedelta(hours=2))
    exotel.onboard(mine.links[0].token, 5)
    core.poller.poll_once()
    clock.tick(timedelta(hours=23))  # the rest have expired unused

    core.home.refresh(REP)
    view = json.dumps(slack.calls("views.publish")[-1].params["view"])
    assert ("Your links, last 30 days*: 3 issued, 1 turned USED, 2 expired unused; "
            "median time to USED 2 h 0 min") in view
    assert "The whole team, last 30 days*: 4 issued, 1 turned USED, 3 expired unused" in view
    # Counted from the history's two indexes, each kept AUDIT_RETENTION_DAYS (90).
    indexes = redis_client.keys("onboard:history:team:*") + redis_client.keys(
        "onboard:history:used:*")
    assert len(indexes) == 2 and not redis_client.keys("onboard:funnel:*")
    for key in indexes:
        assert 0 < redis_client.ttl(key) <= 90 * 86400


# Messages: the rules, the sandbox note -------------------------------------------------------


def test_help_and_replies_agree_with_exotels_rules() -> None:
    text = block_text(messages.onboard_help())
    assert "Send each customer their link" not in text
    assert "24 hours" in text and "up to 5 customers" in text


def test_the_sandbox_is_known_from_the_settings_before_any_exotel_call(
    make_core: Callable[..., Core]
) -> None:
    assert make_core().onboarding.exotel.sandbox  # the fake's loopback URL
    assert talks_to_exotel("https://api.exotel.com")
    assert talks_to_exotel("https://api.in.exotel.com/")
    assert not talks_to_exotel("http://127.0.0.1:8080")


def test_the_funnel_counts_the_last_30_days_of_the_history(
    make_core: Callable[..., Core], clock: FrozenDateTimeFactory, redis_client: redis.Redis
) -> None:
    core = make_core()
    core.onboarding.issue(REP, 2, "Old Co")
    clock.tick(timedelta(days=31))
    core.onboarding.issue(REP, 1, "New Co")
    assert redis_client.zcard("onboard:history:team:T0FAKE") == 3  # kept for reports
    funnel = core.statuses.funnel("T0FAKE", "U0REP")
    assert (funnel.issued, funnel.used, funnel.expired, funnel.days) == (1, 0, 0, 30)


def test_a_retention_shorter_than_30_days_is_the_funnels_window(
    make_core: Callable[..., Core], clock: FrozenDateTimeFactory
) -> None:
    core = make_core(AUDIT_RETENTION_DAYS="7")
    core.onboarding.issue(REP, 2, "Old Co")
    clock.tick(timedelta(days=8))
    core.onboarding.issue(REP, 1, "New Co")
    funnel = core.statuses.funnel("T0FAKE", "U0REP")
    assert (funnel.issued, funnel.expired, funnel.days) == (1, 0, 7)


def test_status_polls_leave_a_window_alone_that_queued_commands_wait_for(
    make_core: Callable[..., Core], exotel: ExotelSandbox, redis_client: redis.Redis
) -> None:
    core = make_core(EXOTEL_RATE_PER_MINUTE=40, STATUS_POLL_SHARE=0.25)
    core.onboarding.issue(REP, 5, "Polled Co")
    core.onboarding.budget.issuing_waits(30)  # what a command told to wait for the budget sets
    assert core.poller.poll_once().checked == 0 and exotel.calls_of("GET") == []
    redis_client.delete(*redis_client.keys("*issuing-waits"))
    assert core.poller.poll_once().checked == 5
