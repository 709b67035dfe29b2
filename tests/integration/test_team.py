"""Team use end to end: who may issue, what is live, sharing, forgetting, audit and quota."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import redis
from freezegun.api import FrozenDateTimeFactory

from bot.domain.audit import STREAM
from bot.exotel.sandbox import ExotelSandbox
from bot.slack.core import Core
from bot.slack.inputs import MAX_NOTE
from bot.slack.messages import FORGET_ACTION, MAX_LISTED, SHARE_ACTION
from testkit.slack import FakeSlack
from testkit.wait import wait_until
from tests.blockkit import assert_within_slack_limits, block_text
from tests.support import REP, START, Bot, fire_due

LINK = re.compile(r"https://messaging\.exotel\.com/ua-links/isv-onboard/([0-9a-f-]+)")
TEAM = {"ALLOWED_USER_IDS": "U0REP", "ALLOWED_USERGROUP_IDS": "S0SALES",
        "ADMIN_USER_IDS": "U0ADMIN"}


def audit_entries(client: redis.Redis) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(STREAM)]


def test_outsiders_are_refused_group_members_and_admins_are_not(
    make_bot: Callable[..., Bot], slack: FakeSlack, exotel: ExotelSandbox, redis_client
) -> None:
    slack.usergroups["S0SALES"] = ["U0GROUP"]
    bot = make_bot(**TEAM)
    refused = bot.command("/onboard-link", "2 ACME", user_id="U0OUT")
    text = block_text(refused.ack)
    assert "not on the list" in text and "<@U0ADMIN>" in text
    assert "2 WhatsApp" in block_text(bot.command("/onboard-link", "2 ACME",
                                                  user_id="U0GROUP").final())
    assert "1 WhatsApp" in block_text(bot.command("/onboard-link", "1 B",
                                                  user_id="U0GROUP").final())
    assert len(exotel.calls_of("POST")) == 3  # none for the refused user
    assert len(slack.calls("usergroups.users.list")) == 1  # membership is cached

    assert "Everyone's live onboarding links" in block_text(
        bot.command("/onboard-link", "list all", user_id="U0ADMIN").ack)
    assert "Only admins" in block_text(bot.command("/onboard-link", "list all",
                                                   user_id="U0REP").ack)
    refusals = [e for e in audit_entries(redis_client) if e["outcome"] == "refused"]
    assert [(e["user_id"], e["action"]) for e in refusals] == [
        ("U0OUT", "onboard-link"), ("U0REP", "onboard-link")]


def test_a_channel_allowlist_and_a_restricted_check(
    make_bot: Callable[..., Bot], exotel: ExotelSandbox
) -> None:
    bot = make_bot(ALLOWED_CHANNEL_IDS="C0SALES", CHECK_TOKEN_RESTRICTED="true",
                   ADMIN_USER_IDS="U0ADMIN")
    assert "in this channel" in block_text(
        bot.command("/onboard-link", "1 X", channel_id="C0RANDOM").ack)
    assert "can't be issued" in block_text(
        bot.command("/check-token", "abc-123", channel_id="C0RANDOM").ack)
    assert "Asking Exotel" in block_text(bot.command("/check-token", "abc-123").ack)
    open_bot = make_bot(ALLOWED_USER_IDS="U0REP")
    assert "Asking Exotel" in block_text(
        open_bot.command("/check-token", "abc-123", user_id="U0OUT").ack)


def test_list_shows_live_batches_with_time_left_and_forget_removes_one(
    make_core: Callable[..., Core], make_bot: Callable[..., Bot], clock: FrozenDateTimeFactory,
    slack: FakeSlack
) -> None:
    core = make_core()
    first = core.onboarding.issue(REP, 2, "ACME Corp").batch
    clock.move_to(START + timedelta(hours=1))
    second = core.onboarding.issue(REP, 1, "Globex").batch
    core.onboarding.issue(REP.model_copy(update={"user_id": "U0B"}),
                          1, "Someone else's")
    bot = make_bot()
    clock.move_to(START + timedelta(hours=5))
    listing = bot.command("/onboard-link", "list").ack
    text = block_text(listing)
    assert text.index("Globex") < text.index("ACME Corp")  # newest first
    # 24 h from issue at START and an hour later, seen 5 h after START (the clock ticks on)
    assert re.search(r"ACME Corp\*: 2 links .*(18 h 59|19 h 0) min left", text)
    assert re.search(r"Globex\*: 1 link .*(19 h 59|20 h 0) min left", text)
    assert "Someone else" not in text
    assert "Someone else" in block_text(bot.command("/onboard-link", "list channel").ack)
    buttons = [b["accessory"] for b in listing["blocks"] if "accessory" in b]
    assert {b["action_id"] for b in buttons} == {FORGET_ACTION}

    reply = bot.click(FORGET_ACTION, first.batch_id)
    assert "no longer tracks" in block_text(reply.final())
    assert "cannot revoke" in block_text(reply.final())
    text = block_text(bot.command("/onboard-link", "list").ack)
    assert "ACME Corp" not in text and "Globex" in text

    clock.move_to(first.reminder_due + timedelta(seconds=1))
    fire_due(core)
    posted = json.dumps([c.params for c in slack.calls("chat.postMessage")])
    assert "ACME Corp" not in posted and second.batch_id not in posted


def test_long_listings_show_the_newest_and_count_the_rest(
    make_core: Callable[..., Core], make_bot: Callable[..., Bot], slack: FakeSlack
) -> None:
    core = make_core()
    padding = "<&> " * (MAX_NOTE // 4)  # the longest note, each character one to escape
    for n in range(MAX_LISTED + 5):
        core.onboarding.issue(REP, 1, f"customer {n}* {padding}"[:MAX_NOTE])
    bot = make_bot()

    listing = bot.command("/onboard-link", "list").ack
    core.home.refresh(REP)
    [home] = slack.calls("views.publish")

    for message in (listing, home.params["view"]):
        assert_within_slack_limits(message)
        text = block_text(message)
        assert f"customer {MAX_LISTED + 4}" in text  # the newest is shown
        # In mrkdwn a note's * is made inert (a lookalike ∗); in plain text it stays.
        assert not any(f"customer {n}{star}" in text for n in (0, 4) for star in "*∗")
        # Each shown with its link in full: as many as fit Slack's limits, the rest counted.
        shown = sum(f"customer {n}*" in text or f"customer {n}∗" in text
                    for n in range(MAX_LISTED + 5))
        hidden = re.search(r"…and (\d+) older ones", text)
        assert hidden and shown >= 10 and shown + int(hidden.group(1)) == MAX_LISTED + 5


def test_a_burst_of_commands_republishes_the_home_tab_once_more_not_once_each(
    make_core: Callable[..., Core], slack: FakeSlack
) -> None:
    core = make_core()
    core.onboarding.issue(REP, 1, "first")
    slack.delays["views.publish"] = 0.3
    threads = [threading.Thread(target=core.home.refresh, args=(REP,)) for _ in range(10)]
    for thread in threads:
        thread.start()
        time.sleep(0.01)  # all ten ask while the first publish is still under way
    core.onboarding.issue(REP, 1, "latest")
    core.home.refresh(REP)
    for thread in threads:
        thread.join()

    views = slack.calls("views.publish")
    assert 2 <= len(views) <= 3
    assert "latest" in block_text(views[-1].params["view"])


def test_forget_one_link_by_command(bot: Bot, redis_client) -> None:
    tokens = LINK.findall(block_text(bot.command("/onboard-link", "2 ACME").final()))
    reply = bot.command("/onboard-link", f"forget https://messaging.exotel.com/ua-links/"
                                         f"isv-onboard/{tokens[0]}")
    assert "no longer tracks the link ending" in block_text(reply.final())
    assert not redis_client.exists(f"onboard:token:{tokens[0]}")
    assert redis_client.exists(f"onboard:token:{tokens[1]}")
    other = bot.command("/onboard-link", f"forget {tokens[1]}", user_id="U0OTHER")
    assert "Only the person who issued" in block_text(other.final())


def test_app_home_is_published_on_open_and_after_a_command(bot: Bot, slack: FakeSlack) -> None:
    assert bot.event({"type": "app_home_opened", "user": "U0REP", "channel": "D0HOME",
                      "tab": "home", "event_ts": "1.0"}).status_code == 200
    slack_views = wait_for(lambda: slack.calls("views.publish"), 1)
    assert slack_views[0].params["user_id"] == "U0REP"
    assert "None right now" in json.dumps(slack_views[0].params["view"])
    bot.command("/onboard-link", "1 ACME Corp").final()
    views = wait_for(lambda: slack.calls("views.publish"), 2)
    assert "ACME Corp" in json.dumps(views[-1].params["view"])


def test_post_to_channel_shares_the_links_attributed_to_the_requester(
    bot: Bot, slack: FakeSlack, redis_client
) -> None:
    final = bot.command("/onboard-link", "2 ACME Corp").final()
    tokens = LINK.findall(block_text(final))
    [share] = [e for b in final["blocks"] if b["type"] == "actions" for e in b["elements"]
               if e["action_id"] == SHARE_ACTION]
    assert "Posted the links" in block_text(bot.click(SHARE_ACTION, share["value"]).final())
    [post] = [c.params for c in slack.calls("chat.postMessage")]
    assert post["channel"] == "C0SALES"
    text = json.dumps(post)
    assert "<@U0REP> shared 2" in text and all(t in text for t in tokens)
    assert "ACME Corp" in text


def test_an_outsider_clicking_renew_is_refused_and_audited(
    make_bot: Callable[..., Bot], exotel: ExotelSandbox, redis_client
) -> None:
    bot = make_bot(ALLOWED_USER_IDS="U0REP", ADMIN_USER_IDS="U0ADMIN")
    final = bot.command("/onboard-link", "1 ACME").final()
    batch_id = next(e["value"] for b in final["blocks"] if b["type"] == "actions"
                    for e in b["elements"])

    reply = bot.click("renew_batch", batch_id, user_id="U0OUT").final()

    assert "not on the list" in block_text(reply) and "<@U0ADMIN>" in block_text(reply)
    assert len(exotel.calls_of("POST")) == 1  # only the first command's
    last = audit_entries(redis_client)[-1]
    assert (last["action"], last["outcome"], last["user_id"]) == ("renew", "refused", "U0OUT")


def test_every_action_is_audited_without_full_tokens(
    make_bot: Callable[..., Bot], redis_client, slack: FakeSlack
) -> None:
    bot = make_bot(ALLOWED_USER_IDS="U0REP")
    final = bot.command("/onboard-link", "2 ACME").final()
    tokens = LINK.findall(block_text(final))
    batch_id = next(e["value"] for b in final["blocks"] if b["type"] == "actions"
                    for e in b["elements"])
    bot.command("/check-token", tokens[0]).final()
    bot.click(SHARE_ACTION, batch_id).final()
    bot.click("renew_batch", batch_id).final()
    bot.click(FORGET_ACTION, batch_id).final()
    bot.command("/onboard-link", "1 X", user_id="U0OUT")
    entries = audit_entries(redis_client)
    assert [e["action"] for e in entries] == ["issue", "check", "share", "renew", "forget",
                                              "onboard-link"]
    assert entries[-1]["outcome"] == "refused"
    assert entries[0]["tokens"] == ",".join(f"…{t[-4:]}" for t in tokens)
    dump = json.dumps(entries)
    assert not any(t in dump for t in tokens)


def test_the_201st_link_of_a_day_is_refused_with_when_more_come(
    bot: Bot, exotel: ExotelSandbox
) -> None:
    for _ in range(4):
        assert "50 WhatsApp" in block_text(bot.command("/onboard-link", "50").final())
    text = block_text(bot.command("/onboard-link", "1 one more").final())
    assert "at most 200 links in any 24 hours" in text and "0 left" in text
    assert re.search(r"More can be issued from <!date\^\d+\^", text)
    assert len(exotel.calls_of("POST")) == 200
    other = bot.command("/onboard-link", "1", user_id="U0OTHER").final()
    assert "1 WhatsApp" in block_text(other)  # the quota is per user


def wait_for(get: Callable[[], list], count: int, timeout: float = 15) -> list:
    wait_until(lambda: len(get()) >= count, timeout, f"{count} found")
    return get()
