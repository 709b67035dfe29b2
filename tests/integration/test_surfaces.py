"""Issue 15: links from Workflow Builder, the form, the message shortcut and link previews,
each driven end to end through signed requests like Slack's."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from bot.domain.audit import STREAM
from bot.domain.models import Requester
from bot.domain.store import BatchRecorder
from bot.exotel.sandbox import ExotelSandbox
from bot.exotel.tokens import token_from_link
from testkit.signed import (
    function_executed_body,
    link_shared_body,
    message_action_body,
    post_signed,
    shortcut_body,
    view_submission_body,
)
from testkit.slack import FakeSlack
from testkit.wait import wait_until
from tests.blockkit import block_text
from tests.support import Bot

STEP = "create_onboarding_links"
FORM = "new_onboarding_links"
SEND = "send_onboarding_link"
STEP_TOKEN = "xwfp-test-step-token-3a1b"
CUSTOMER_MESSAGE = {"type": "message", "user": "U0CUST", "ts": "1700000100.000200",
                    "text": "Hi! How do we get WhatsApp set up?", "team": "T0CUST"}


def form_values(count: str, note: str = "", channel: str | None = None) -> dict[str, Any]:
    return {"count": {"type": "number_input", "value": count},
            "customer_note": {"type": "plain_text_input", "value": note or None},
            "channel": {"type": "conversations_select", "selected_conversation": channel}}


def posts_to(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [p for p in slack.params("chat.postMessage") if p.get("channel") == channel]


def tracked(bot: Bot, url: str) -> Any:
    token = token_from_link(url)
    assert token is not None
    return bot.core.store.get_link(token)


def audit_refusals(client: redis.Redis) -> list[tuple[str, str]]:
    return [(f["user_id"], f["action"]) for _, f in client.xrange(STREAM)
            if f["outcome"] == "refused"]


# 1. The Workflow Builder step --------------------------------------------------------

def test_the_workflow_step_issues_tracks_and_completes_with_the_links(
    bot: Bot, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    body = function_executed_body(STEP, {"user_id": "U0REP", "count": 2,
                                         "customer_note": "ACME <Corp>"})
    assert post_signed(bot.url, body).status_code == 200
    wait_until(lambda: slack.calls("functions.completeSuccess"), 30, "the step completed")
    call = slack.calls("functions.completeSuccess")[0]
    assert call.authorization == f"Bearer {STEP_TOKEN}"  # the execution's own token
    params = slack.params("functions.completeSuccess")[0]
    assert params["function_execution_id"] == "Fx0STEP"
    links = params["outputs"]["links"].split("\n")
    assert len(links) == 2 and params["outputs"]["first_link"] == links[0]
    for url in links:
        link = tracked(bot, url)
        assert link.requester.user_id == "U0REP" and link.note == "ACME <Corp>"
    batch = bot.core.store.get_batch(tracked(bot, links[0]).batch_id)
    assert batch is not None and len(batch.tokens) == 2 and batch.reminder_due is not None
    assert len(exotel.calls_of("POST")) == 2
    assert slack.calls("functions.completeError") == []


def test_a_bad_count_ends_the_step_with_a_readable_error_and_no_exotel_call(
    bot: Bot, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    post_signed(bot.url, function_executed_body(STEP, {"user_id": "U0REP", "count": 0}))
    wait_until(lambda: slack.calls("functions.completeError"), 30, "the step failed")
    error = slack.params("functions.completeError")[0]["error"]
    assert "whole number from 1 to 50" in error and ":" not in error.split()[0]
    assert slack.calls("functions.completeError")[0].authorization == f"Bearer {STEP_TOKEN}"
    assert exotel.calls == [] and slack.calls("functions.completeSuccess") == []


def test_a_step_without_its_user_says_which_input_to_set(
    bot: Bot, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    post_signed(bot.url, function_executed_body(STEP, {"count": 1}, execution_id="Fx0NOUSER"))
    wait_until(lambda: slack.calls("functions.completeError"), 30, "the step failed")
    assert "Person who used this workflow" in slack.params("functions.completeError")[0]["error"]
    assert exotel.calls == []


def test_the_step_token_is_never_logged_nor_shown_in_job_arguments(
    bot: Bot, slack: FakeSlack, caplog: Any
) -> None:
    from bot.engine.queue import StepExecution

    assert STEP_TOKEN not in repr(StepExecution("Fx0STEP", STEP_TOKEN))  # RQ logs job args
    caplog.set_level("INFO")
    post_signed(bot.url, function_executed_body(STEP, {"user_id": "U0REP", "count": 1}))
    wait_until(lambda: slack.calls("functions.completeSuccess"), 30, "the step completed")
    wait_until(lambda: any(r.getMessage().startswith("run_workflow_step for U0REP: ")
                           for r in caplog.records), 30, "the job's line, once it ended")
    assert not [r for r in caplog.records if STEP_TOKEN in r.getMessage()]


# 2. The form ---------------------------------------------------------------------------

def test_the_global_shortcut_opens_the_form(bot: Bot, slack: FakeSlack) -> None:
    assert post_signed(bot.url, shortcut_body(FORM)).status_code == 200
    [opened] = slack.params("views.open")  # before the ack: the trigger lasts 3 s
    assert opened["trigger_id"] == "12345.98765.abcd"
    view = opened["view"]
    assert view["type"] == "modal" and view["callback_id"] == FORM
    elements = {block["block_id"]: block["element"] for block in view["blocks"]
                if block["type"] == "input"}
    assert list(elements) == ["count", "customer_note", "customer_ref", "channel"]
    assert {block_id: e["action_id"] for block_id, e in elements.items()} == {
        "count": "count", "customer_note": "customer_note", "customer_ref": "customer_ref",
        "channel": "channel"}
    assert elements["count"]["type"] == "number_input"
    assert (elements["count"]["min_value"], elements["count"]["max_value"]) == ("1", "50")
    assert elements["customer_note"]["type"] == "plain_text_input"
    assert elements["customer_ref"]["type"] == "plain_text_input"
    assert elements["customer_ref"]["max_length"] == 200
    labels = {b["block_id"]: b["label"]["text"] for b in view["blocks"] if b["type"] == "input"}
    assert labels["customer_ref"] == "CRM reference"
    assert elements["channel"]["type"] == "conversations_select"
    assert [b.get("optional", False) for b in view["blocks"] if b["type"] == "input"] == [
        False, True, True, True]


def test_the_app_home_button_opens_the_same_form(bot: Bot, slack: FakeSlack) -> None:
    from bot.domain.models import Requester

    home = bot.core.home.view(Requester(team_id="T0TEAM", user_id="U0REP", channel_id=""))
    buttons = [e for b in home["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [(b["action_id"], b["text"]["text"]) for b in buttons] == [(FORM, "New links")]
    bot.click(FORM, "")
    assert slack.params("views.open")[0]["view"]["callback_id"] == FORM


def test_submitting_the_form_dms_the_links_and_posts_them_attributed(
    bot: Bot, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    body = view_submission_body(FORM, form_values("2", "Globex <@U0X>", "C0DEALS"))
    http = post_signed(bot.url, body)
    assert http.status_code == 200 and not http.content  # the modal closes at once
    wait_until(lambda: posts_to(slack, "C0DEALS") and len(posts_to(slack, "DU0REP")) >= 2,
               30, "the links DMed and posted")
    dm, receipt = posts_to(slack, "DU0REP")
    urls = [link.url for link in bot.core.store.links_of(
        bot.core.store.get_batch(tracked_batch_id(bot)))]
    assert len(urls) == 2
    assert all(url in block_text(dm) for url in urls)
    posted = block_text(posts_to(slack, "C0DEALS")[0])
    assert "<@U0REP> shared 2" in posted and all(url in posted for url in urls)
    notes = [e for b in posts_to(slack, "C0DEALS")[0]["blocks"] for e in b.get("elements", [])
             if "Globex" in str(e.get("text"))]
    assert [e["type"] for e in notes] == ["plain_text"]  # never a mention
    assert "C0DEALS" in receipt["text"]
    assert tracked(bot, urls[0]).note == "Globex <@U0X>"
    assert {c.params["users"] for c in slack.calls("conversations.open")} == {"U0REP"}


def tracked_batch_id(bot: Bot) -> str:
    listing = bot.core.store.live_batches(
        "user", Requester(team_id="T0FAKE", user_id="U0REP", channel_id=""), 5)
    assert len(listing.batches) == 1
    return listing.batches[0].batch_id


def test_a_count_of_99_is_an_inline_error_on_the_field_and_no_exotel_call(
    bot: Bot, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    http = post_signed(bot.url, view_submission_body(FORM, form_values("99", "x")))
    assert http.json()["response_action"] == "errors"
    assert list(http.json()["errors"]) == ["count"]
    assert "1 to 50" in http.json()["errors"]["count"]
    time.sleep(0.3)  # nothing may follow: give a wrongly queued job the chance to show
    assert exotel.calls == [] and slack.calls("chat.postMessage") == []


# 3. The message shortcut ----------------------------------------------------------------

def test_the_message_shortcut_posts_one_link_in_the_thread_attributed_and_tracked(
    bot: Bot, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    slack.users["U0CUST"] = {"id": "U0CUST", "team_id": "T0CUST", "name": "priya",
                             "profile": {"real_name": "Priya Rao", "team": "T0CUST"}}
    slack.teams["T0CUST"] = {"id": "T0CUST", "name": "Globex"}
    name = "shortcut-ok"
    body = message_action_body(SEND, slack.response_url(name), CUSTOMER_MESSAGE,
                               channel_id="C0SHARED")
    assert post_signed(bot.url, body).status_code == 200
    wait_until(lambda: posts_to(slack, "C0SHARED"), 30, "the link posted in the thread")
    [post] = posts_to(slack, "C0SHARED")
    assert post["thread_ts"] == CUSTOMER_MESSAGE["ts"]
    text = block_text(post)
    assert "<@U0REP> sent a WhatsApp onboarding link" in text
    [url] = [w for w in text.split() if w.startswith("https://messaging.exotel.com/")][:1]
    link = tracked(bot, url)
    assert link.note == "Priya Rao (Globex)"
    assert link.requester == Requester(team_id="T0FAKE", user_id="U0REP", channel_id="C0SHARED")
    assert len(exotel.calls_of("POST")) == 1
    assert slack.replies(name) == []  # nothing private to say


def test_the_message_shortcut_where_the_bot_is_not_tells_the_rep_privately(
    bot: Bot, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    slack.channel_errors["C0PRIVATE"] = "not_in_channel"
    name = "shortcut-refused"
    post_signed(bot.url, message_action_body(SEND, slack.response_url(name),
                                             CUSTOMER_MESSAGE, channel_id="C0PRIVATE"))
    reply = bot.slack.wait_for_replies(name)[0]
    text = block_text(reply)
    assert "not_in_channel" in text and "/invite" in text
    assert reply["response_type"] == "ephemeral"
    [url] = [w for w in text.split() if w.startswith("https://messaging.exotel.com/")]
    assert tracked(bot, url).note == "U0CUST"  # users.info did not know them: the id
    assert posts_to(slack, "C0PRIVATE")[0]["thread_ts"] == CUSTOMER_MESSAGE["ts"]


# 4. Link previews -----------------------------------------------------------------------

def unfurled(slack: FakeSlack) -> list[dict[str, Any]]:
    return [p["unfurls"] for p in slack.params("chat.unfurl")]


def test_a_tracked_link_unfurls_with_status_time_left_issuer_and_note(
    bot: Bot, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    result = bot.core.onboarding.issue(
        Requester(team_id="T0FAKE", user_id="U0REP", channel_id="C0SALES"), 1, "Initech <HQ>")
    url = result.links[0].url
    assert post_signed(bot.url, link_shared_body([url])).status_code == 200
    wait_until(lambda: slack.calls("chat.unfurl"), 30, "the link unfurled")
    [params] = slack.params("chat.unfurl")
    assert (params["channel"], params["ts"]) == ("C0SALES", "1700000000.000100")
    text = block_text(params["unfurls"][url])
    assert "VALID" in text and "Issued by <@U0REP>" in text and "h " in text
    assert "Customer note: Initech <HQ>" in text
    assert result.links[0].token not in text  # masked
    assert len(exotel.calls_of("GET")) == 1

    post_signed(bot.url, link_shared_body([url], message_ts="1700000000.000200"))  # pasted again
    wait_until(lambda: len(slack.calls("chat.unfurl")) == 2, 30, "the second preview")
    assert len(exotel.calls_of("GET")) == 1  # from the status cache


def test_an_untracked_link_unfurls_with_its_status_only(
    bot: Bot, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    made = bot.core.onboarding.exotel.create_links(1).links[0]  # not tracked
    exotel.onboard(made.token, customers=5)
    not_a_link = "https://messaging.exotel.com/other/not a token"
    post_signed(bot.url, link_shared_body([made.url, not_a_link]))
    wait_until(lambda: slack.calls("chat.unfurl"), 30, "the link unfurled")
    [unfurls] = unfurled(slack)
    assert list(unfurls) == [made.url]
    text = block_text(unfurls[made.url])
    assert "USED" in text and "Issued by" not in text and "Customer note" not in text


def test_previews_leave_exotel_alone_when_most_of_the_budget_is_taken(
    make_bot: Callable[..., Bot], slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    bot = make_bot(EXOTEL_RATE_PER_MINUTE="4")
    core = bot.core
    url = core.onboarding.issue(Requester(team_id="T0FAKE", user_id="U0REP",
                                          channel_id="C0SALES"), 1, "").links[0].url
    for _ in range(3):  # 4 of 4 taken: more than 75 %
        core.onboarding.budget.acquire(time.monotonic() + 5)
    post_signed(bot.url, link_shared_body([url]))
    wait_until(lambda: slack.calls("chat.unfurl"), 30, "the link unfurled")
    text = block_text(unfurled(slack)[0][url])
    assert "status unknown" in text and "Issued by <@U0REP>" in text
    assert exotel.calls_of("GET") == []


def test_previews_ask_exotel_for_at_most_a_tenth_of_its_budget(
    make_bot: Callable[..., Bot], slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    bot = make_bot(EXOTEL_RATE_PER_MINUTE="20")  # previews: 2 a minute
    made = bot.core.onboarding.exotel.create_links(3).links
    post_signed(bot.url, link_shared_body([link.url for link in made]))
    wait_until(lambda: slack.calls("chat.unfurl"), 30, "the links unfurled")
    texts = [block_text(u) for u in unfurled(slack)[0].values()]
    assert len(texts) == 3 and sum("status unknown" in t for t in texts) == 1
    assert len(exotel.calls_of("GET")) == 2


# 5. Everyone outside the allowlist is refused at every door, and it is audited ---------------

def test_an_outsider_is_refused_by_all_four_entry_points_and_audited(
    make_bot: Callable[..., Bot], slack: FakeSlack, exotel: ExotelSandbox,
    redis_client: redis.Redis,
) -> None:
    bot = make_bot(ALLOWED_USER_IDS="U0BOSS", ADMIN_USER_IDS="U0ADMIN",
                   CHECK_TOKEN_RESTRICTED="true")
    issued = bot.core.onboarding.issue(
        Requester(team_id="T0FAKE", user_id="U0BOSS", channel_id="C0SALES"), 1, "x")
    exotel.calls.clear()

    post_signed(bot.url, function_executed_body(STEP, {"user_id": "U0REP", "count": 1}))
    wait_until(lambda: slack.calls("functions.completeError"), 30, "the step refused")
    assert "not on the list" in slack.params("functions.completeError")[0]["error"]

    post_signed(bot.url, shortcut_body(FORM))
    refused_view = slack.params("views.open")[0]["view"]
    assert "not on the list" in block_text(refused_view) and "<@U0ADMIN>" in block_text(
        refused_view)
    assert "submit" not in refused_view
    submitted = post_signed(bot.url, view_submission_body(FORM, form_values("1")))
    assert "not on the list" in submitted.json()["errors"]["count"]

    post_signed(bot.url, message_action_body(SEND, slack.response_url("out"),
                                             CUSTOMER_MESSAGE))
    assert "not on the list" in block_text(slack.wait_for_replies("out")[0])

    post_signed(bot.url, link_shared_body([issued.links[0].url]))
    wait_until(lambda: slack.calls("chat.postEphemeral"), 30, "the sharer told")
    ephemeral = slack.params("chat.postEphemeral")[0]
    assert ephemeral["user"] == "U0REP" and "not on the list" in block_text(ephemeral)

    assert exotel.calls == []
    assert slack.calls("chat.unfurl") == [] and slack.calls("chat.postMessage") == []
    assert audit_refusals(redis_client) == [("U0REP", "workflow"), ("U0REP", "form"),
                                            ("U0REP", "form"), ("U0REP", "send_in_thread"),
                                            ("U0REP", "unfurl")]


def test_a_step_whose_worker_died_completes_with_the_links_it_had_made(
    make_core: Callable[..., Any], slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    from rq.exceptions import AbandonedJobError
    from rq.job import Job

    from bot.engine.queue import Reply, StepExecution
    from bot.runtime import jobs

    core = make_core()
    requester = Requester(team_id="T0FAKE", user_id="U0REP", channel_id="")
    made = core.onboarding.exotel.create_links(1).links[0]
    recorder = BatchRecorder.start(core.store, requester, "ACME", "batch-cut",
                                   core.reminders.lead)
    recorder.add(made)  # one of three made before the worker was killed
    job = Job.create(jobs.run_workflow_step, connection=core.commands.queue.connection,
                     args=(Reply.to(None), requester, 3, "ACME", "batch-cut",
                           StepExecution("Fx0CUT", STEP_TOKEN)))
    error = AbandonedJobError("worker died")
    jobs.on_failure(job, core.commands.queue.connection, AbandonedJobError, error, None)
    params = slack.params("functions.completeSuccess")[0]
    assert params["function_execution_id"] == "Fx0CUT"
    assert params["outputs"] == {"links": made.url, "first_link": made.url}


# 6. A customer's CRM reference, by the form and the step ----------------------------------

def test_the_steps_customer_ref_input_is_the_batchs_crm_reference(
    bot: Bot, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    post_signed(bot.url, function_executed_body(STEP, {
        "user_id": "U0REP", "count": 1, "customer_note": "ACME", "customer_ref": "crm-42"}))
    wait_until(lambda: slack.calls("functions.completeSuccess"), 30, "the step completed")
    url = slack.params("functions.completeSuccess")[0]["outputs"]["first_link"]
    batch = bot.core.store.get_batch(tracked(bot, url).batch_id)
    assert batch is not None and (batch.note, batch.customer_ref) == ("ACME", "crm-42")


def test_a_bad_customer_ref_input_ends_the_step_with_a_readable_error_and_no_exotel_call(
    bot: Bot, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    post_signed(bot.url, function_executed_body(STEP, {"user_id": "U0REP",
                                                       "customer_ref": "x" * 201}))
    wait_until(lambda: slack.calls("functions.completeError"), 30, "the step failed")
    error = slack.params("functions.completeError")[0]["error"]
    assert "keep the CRM reference to 200 characters (it has 201)" in error
    assert exotel.calls == [] and slack.calls("functions.completeSuccess") == []


def test_the_forms_crm_reference_is_the_batchs_and_a_bad_one_is_an_error_on_its_field(
    bot: Bot, slack: FakeSlack, exotel: ExotelSandbox
) -> None:
    values = {**form_values("1", "Globex"),
              "customer_ref": {"type": "plain_text_input", "value": "priya@globex.example"}}
    assert post_signed(bot.url, view_submission_body(FORM, values)).status_code == 200
    wait_until(lambda: posts_to(slack, "DU0REP"), 30, "the links DMed")
    batch = bot.core.store.get_batch(tracked_batch_id(bot))
    assert batch is not None and batch.customer_ref == "priya@globex.example"
    assert "CRM reference: priya@globex.example" in block_text(posts_to(slack, "DU0REP")[0])

    bad = {**values, "customer_ref": {"type": "plain_text_input", "value": "crm\u0007"}}
    http = post_signed(bot.url, view_submission_body(FORM, bad))
    assert http.json()["response_action"] == "errors"
    assert list(http.json()["errors"]) == ["customer_ref"]
    assert "control characters" in http.json()["errors"]["customer_ref"]
    assert len(exotel.calls_of("POST")) == 1  # the first form's only


def _scheduled(core: Any) -> list[Any]:
    from rq.job import Job
    from rq.registry import ScheduledJobRegistry

    registry = ScheduledJobRegistry(queue=core.commands.queue)
    return [Job.fetch(job_id, connection=core.commands.queue.connection)
            for job_id in registry.get_job_ids()]


@pytest.mark.parametrize("job", ["issue_links", "issue_from_form", "run_workflow_step"])
def test_a_command_waiting_for_exotels_budget_keeps_its_crm_reference(
    make_core: Callable[..., Any], slack: FakeSlack, exotel: ExotelSandbox, job: str
) -> None:
    from bot.engine.queue import Reply, StepExecution
    from bot.runtime import jobs

    core = make_core(EXOTEL_RATE_PER_MINUTE="4")
    for _ in range(4):  # the minute's budget spent: the command is queued again for later
        core.onboarding.budget.acquire(time.monotonic() + 5)
    requester = Requester(team_id="T0FAKE", user_id="U0REP", channel_id="C0SALES")
    tail = {"issue_links": (), "issue_from_form": (None,),
            "run_workflow_step": (StepExecution("Fx0WAIT", STEP_TOKEN),)}[job]
    getattr(jobs, job)(Reply.to(slack.response_url("wait")), requester, 2, "ACME", "batch-w",
                       *tail, customer_ref="crm-9")
    [later] = _scheduled(core)
    assert later.func_name == f"bot.runtime.jobs.{job}"
    assert later.kwargs == {"customer_ref": "crm-9"}
    assert later.args[1:5] == (requester, 2, "ACME", "batch-w")
    assert exotel.calls == []
