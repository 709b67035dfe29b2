"""Listeners on their own, as Slack's starter template tests them: Bolt's injected arguments
mocked, the core from `context` (each of its parts a mock specced on the real class, so a
renamed method fails here). What each one acks, enqueues or refuses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, get_type_hints
from unittest.mock import MagicMock, create_autospec

import pytest
from freezegun import freeze_time
from slack_bolt import BoltContext
from slack_sdk import WebClient

from bot.domain.access import Decision
from bot.domain.models import Batch, Requester
from bot.domain.store import StoreUnavailable
from bot.engine.queue import StepExecution, UnfurlTarget
from bot.engine.registry import Job
from bot.slack import linkviews, messages, surfaces
from bot.slack.blocks import Message
from bot.slack.core import Core
from bot.slack.messages import FORGET_ACTION, STOP_ACTION
from handlers.actions import batch_button, issue_anyway
from handlers.check_token import check_token
from handlers.home import home_opened
from handlers.onboard_link import onboard_link
from handlers.shortcuts import FORM_UNAVAILABLE, form_shortcut, form_submitted, send_in_thread
from handlers.unfurl import link_shared
from handlers.workflow import NO_USER, create_links

BATCH = "0123456789abcdef0123456789abcdef"
URL = "https://hooks.slack.test/r"
TOKEN = "3f1c2a9e-5b7d-4e0f-9a21-7c6d5e4b3a10"
LINK = f"https://messaging.exotel.com/ua-links/isv-onboard/{TOKEN}"
REASON = "You are not on the list."
REP = Requester(team_id="T0FAKE", user_id="U0REP", channel_id="C0SALES")
RULES = ("may_issue", "may_check", "may_list", "may_click", "may_open_form", "may_preview")


TYPES = get_type_hints(Core)


def spec_of(kind: type) -> Any:
    """A mock with `kind`'s methods and signatures; Slack's client, with its hundreds of
    methods (a sixth of a second to autospec, each test), with its methods' names only."""
    if kind is WebClient:
        return MagicMock(spec=WebClient)
    return create_autospec(kind, instance=True)


def mock_core(allowed: bool = True) -> Any:
    """A core whose access policy answers every question the same way."""
    core = Core(**{field.name: spec_of(TYPES[field.name]) for field in fields(Core)})
    for rule in RULES:
        getattr(core.access, rule).return_value = Decision(allowed, "" if allowed else REASON)
    core.access.admins = ["U0ADMIN"]
    core.settings.audit_retention_days = 90  # how far back `report [days]` may go
    core.access.restricts_channels = False
    core.check_rate.hit.return_value = None  # under the /check-token rate limit
    core.onboarding.existing.return_value = None  # no live links for the customer yet
    return core


def redis_down(core: MagicMock) -> MagicMock:
    core.commands.enqueue.side_effect = StoreUnavailable("connection refused")
    return core


def context(core: MagicMock, **fields: Any) -> BoltContext:
    return BoltContext({"core": core, **fields})


def enqueued(core: MagicMock) -> tuple[Any, ...]:
    """The job and its arguments after the reply (which `reply_url` reads)."""
    core.commands.enqueue.assert_called_once()
    job, _reply, *args = core.commands.enqueue.call_args.args
    return (job, *args)


def reply_url(core: MagicMock) -> str | None:
    url: str | None = core.commands.enqueue.call_args.args[1].url
    return url


def acked(ack: MagicMock) -> dict[str, Any]:
    ack.assert_called_once()
    assert not ack.call_args.args
    return dict(ack.call_args.kwargs)


# --- the slash commands ---------------------------------------------------------------------

def slash(text: str) -> dict[str, Any]:
    return {"text": text, "team_id": "T0FAKE", "user_id": "U0REP", "channel_id": "C0SALES",
            "response_url": URL}


def run(listener: Callable[..., None], text: str, core: MagicMock) -> dict[str, Any]:
    ack = MagicMock()
    listener(ack=ack, command=slash(text), context=context(core))
    return acked(ack)


def test_onboard_link_enqueues_the_issue_then_acks_working() -> None:
    core = mock_core()
    assert run(onboard_link, "3 ACME Corp", core) == messages.working(3)
    job, requester, count, note, batch_id, *flags = enqueued(core)
    assert (job, requester, count, note) == (Job.ISSUE_LINKS, REP, 3, "ACME Corp")
    assert flags == [False, True]  # the listener looked for live links: the job issues
    assert len(batch_id) == 32 and reply_url(core) == URL
    assert core.commands.enqueue.call_args.kwargs == {"idempotent": False,
                                                      "job_kwargs": {"customer_ref": ""}}
    core.access.may_issue.assert_called_once_with("U0REP", "C0SALES")


def test_a_ref_word_travels_with_the_job_by_name_and_not_in_the_note() -> None:
    core = mock_core()
    assert run(onboard_link, "2 ACME Corp ref:hubspot-12345", core) == messages.working(2)
    job, requester, count, note, _batch, *flags = enqueued(core)
    assert (job, requester, count, note, flags) == (Job.ISSUE_LINKS, REP, 2, "ACME Corp",
                                                    [False, True])
    assert core.commands.enqueue.call_args.kwargs["job_kwargs"] == {
        "customer_ref": "hubspot-12345"}
    core.onboarding.existing.assert_called_once_with(REP, 2, "ACME Corp", "hubspot-12345")


@pytest.mark.parametrize(("text", "says"), [
    ("2 ACME ref:", "right after `ref:`"),
    ("2 ACME ref:" + "x" * 201, "to 200 characters (it has 201)"),
    ("2 ACME ref:crm\x07", "control characters"),
    ("2 ACME ref:a ref:b", "one CRM reference only"),
])
def test_a_bad_ref_word_is_refused_in_the_ack_and_nothing_else_happens(text: str,
                                                                      says: str) -> None:
    core = mock_core()
    answer = run(onboard_link, text, core)
    assert answer["text"].startswith(":warning:") and says in answer["text"]
    assert "/onboard-link help" in answer["text"]
    assert not core.commands.enqueue.called and not core.access.method_calls
    assert not core.onboarding.existing.called


def test_onboard_link_forget_enqueues_the_forget_of_that_token() -> None:
    core = mock_core()
    assert run(onboard_link, f"forget {LINK}", core) == {}
    assert enqueued(core) == (Job.FORGET, REP, TOKEN, None)


@pytest.mark.parametrize(("admin", "text", "days"), [(False, "report", 7), (True, "report 30", 30)])
def test_onboard_link_report_enqueues_the_report_team_wide_for_an_admin(
        admin: bool, text: str, days: int) -> None:
    core = mock_core()
    core.access.is_admin.return_value = admin
    assert run(onboard_link, text, core) == messages.preparing_report()
    core.access.may_list.assert_called_once_with("U0REP", "C0SALES", "user")
    assert enqueued(core) == (Job.SEND_REPORT, REP, days, admin)


def test_onboard_link_report_of_a_refused_user_enqueues_nothing() -> None:
    core = mock_core(allowed=False)
    assert REASON in run(onboard_link, "report", core)["text"]
    assert not core.commands.enqueue.called


def test_onboard_link_list_all_asks_the_policy_about_all_and_relays_its_refusal() -> None:
    core = mock_core(allowed=False)
    answer = run(onboard_link, "list all", core)
    core.access.may_list.assert_called_once_with("U0REP", "C0SALES", "all")
    assert REASON in answer["text"] and not core.commands.enqueue.called


def test_check_token_enqueues_the_check_then_acks_checking() -> None:
    core = mock_core()
    assert run(check_token, LINK, core) == messages.checking()
    assert enqueued(core) == (Job.CHECK_TOKEN, REP, TOKEN)
    assert reply_url(core) == URL
    core.access.may_check.assert_called_once_with("U0REP", "C0SALES")


def test_check_token_over_the_rate_limit_is_refused_before_any_job() -> None:
    core = mock_core()
    core.check_rate.hit.return_value = 12.0
    core.check_rate.per_minute = 10
    answer = run(check_token, LINK, core)
    assert "at most 10 tokens a minute" in answer["text"] and "12 s" in answer["text"]
    assert not core.commands.enqueue.called
    core.onboarding.refused.assert_called_once_with(
        REP, "check-token", "more than 10 checks a minute", outcome="rate-limited")


# Each slash command: (the listener, good text, bad text, its usage answer, its help answer).
COMMANDS = [
    pytest.param(onboard_link, "2 ACME", "0 ACME", "/onboard-link help", messages.onboard_help(),
                 id="onboard-link"),
    pytest.param(check_token, TOKEN, "not a token!", "doesn't look like", messages.check_help(),
                 id="check-token"),
]


@pytest.mark.parametrize(("listener", "good", "bad", "usage", "help_answer"), COMMANDS)
def test_a_usage_problem_is_explained_in_the_ack_and_nothing_else_happens(
        listener: Callable[..., None], good: str, bad: str, usage: str,
        help_answer: Message) -> None:
    core = mock_core()
    answer = run(listener, bad, core)
    assert answer["text"].startswith(":warning:") and usage in answer["text"]
    assert not core.commands.enqueue.called and not core.access.method_calls


@pytest.mark.parametrize(("listener", "good", "bad", "usage", "help_answer"), COMMANDS)
def test_help_is_the_ack(listener: Callable[..., None], good: str, bad: str, usage: str,
                         help_answer: Message) -> None:
    core = mock_core()
    assert run(listener, "help", core) == help_answer
    assert not core.commands.enqueue.called and not core.access.method_calls


@pytest.mark.parametrize(("listener", "good", "bad", "usage", "help_answer"), COMMANDS)
def test_a_refused_user_is_told_whom_to_ask_and_the_refusal_audited(
        listener: Callable[..., None], good: str, bad: str, usage: str,
        help_answer: Message) -> None:
    core = mock_core(allowed=False)
    assert run(listener, good, core) == messages.refused(REASON, ["U0ADMIN"])
    assert not core.commands.enqueue.called
    name = "onboard-link" if listener is onboard_link else "check-token"
    core.onboarding.refused.assert_called_once_with(REP, name, REASON)


@pytest.mark.parametrize(("listener", "good", "bad", "usage", "help_answer"), COMMANDS)
def test_redis_down_at_enqueue_is_the_ack(listener: Callable[..., None], good: str, bad: str,
                                          usage: str, help_answer: Message) -> None:
    core = redis_down(mock_core())
    assert run(listener, good, core) == messages.problem(StoreUnavailable())
    core.commands.enqueue.assert_called_once()


# --- buttons ------------------------------------------------------------------------------------

def click_body() -> dict[str, Any]:
    return {"user": {"id": "U0REP"}, "team": {"id": "T0FAKE"}, "channel": {"id": "C0SALES"},
            "response_url": URL}


def click(action_id: str, value: str, allowed: bool = True) -> tuple[Any, MagicMock]:
    core, ack = mock_core(allowed), MagicMock()
    batch_button(ack=ack, body=click_body(), action={"action_id": action_id, "value": value},
                 context=context(core))
    ack.assert_called_once()
    return core, ack


def test_an_allowed_click_enqueues_its_job_with_the_batch() -> None:
    core, _ = click(STOP_ACTION, BATCH)
    assert enqueued(core) == (Job.STOP_REMINDERS, REP, BATCH)
    assert reply_url(core) == URL


def test_forget_gets_no_token_and_the_batch() -> None:
    core, _ = click(FORGET_ACTION, BATCH)
    assert enqueued(core) == (Job.FORGET, REP, None, BATCH)


def test_a_refused_click_enqueues_only_the_refusal() -> None:
    core, _ = click(STOP_ACTION, BATCH, allowed=False)
    assert enqueued(core) == (Job.RESPOND, messages.refused(REASON, ["U0ADMIN"]))
    core.onboarding.refused.assert_called_once()


def test_issue_anyway_enqueues_a_repeat_allowed_issue() -> None:
    core, ack = mock_core(), MagicMock()
    issue_anyway(ack=ack, body=click_body(), action={"value": "2 ACME"},
                 context=context(core))
    job, requester, count, note, _batch, *flags = enqueued(core)
    assert (job, requester, count, note, flags) == (Job.ISSUE_LINKS, REP, 2, "ACME",
                                                    [False, True])
    assert core.commands.enqueue.call_args.kwargs["job_kwargs"] == {"customer_ref": ""}
    assert acked(ack) == {}


def test_issue_anyway_keeps_the_reference_of_the_repeat_answer() -> None:
    core, ack = mock_core(), MagicMock()
    issue_anyway(ack=ack, body=click_body(), action={"value": "2 ACME ref:crm-1"},
                 context=context(core))
    _job, _requester, _count, note, *_ = enqueued(core)
    assert note == "ACME"
    assert core.commands.enqueue.call_args.kwargs["job_kwargs"] == {"customer_ref": "crm-1"}


# --- the form (global shortcut and modal) and the message shortcut ---------------------------

def test_the_form_shortcut_opens_the_form_then_acks() -> None:
    core, ack = mock_core(), MagicMock()
    form_shortcut(ack=ack, body={**click_body(), "trigger_id": "1.2.abc"},
                  context=context(core), logger=MagicMock())
    core.delivery.open_view.assert_called_once_with("1.2.abc", surfaces.form_view())
    core.access.may_open_form.assert_called_once_with("U0REP")
    assert acked(ack) == {}


def test_a_refused_user_gets_the_refusal_in_the_modal_and_the_ack_still_comes() -> None:
    core, ack, logger = mock_core(allowed=False), MagicMock(), MagicMock()
    core.delivery.open_view.side_effect = OSError("timed out")  # the 3 s trigger lapsed
    form_shortcut(ack=ack, body={**click_body(), "trigger_id": "1.2.abc"},
                  context=context(core), logger=logger)
    assert (core.delivery.open_view.call_args.args[1]
            == surfaces.refused_view(REASON, ["U0ADMIN"]))
    core.onboarding.refused.assert_called_once_with(
        REP.model_copy(update={"channel_id": ""}), "form", REASON)
    logger.warning.assert_called_once()
    assert acked(ack) == {}


def submitted(count: str, note: str = "ACME", channel: str | None = "C0SALES",
              ref: str | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {
        surfaces.COUNT: {surfaces.COUNT: {"value": count}},
        surfaces.NOTE: {surfaces.NOTE: {"value": note}},
        surfaces.CHANNEL: {surfaces.CHANNEL: {"selected_conversation": channel}},
    }
    if ref is not None:  # a form opened before the field existed has no such block
        values[surfaces.REF] = {surfaces.REF: {"value": ref}}
    return {"state": {"values": values}}


def submit(core: MagicMock, view: dict[str, Any]) -> dict[str, Any]:
    ack = MagicMock()
    form_submitted(ack=ack, body=click_body(), view=view, context=context(core))
    return acked(ack)


def test_a_submitted_form_enqueues_the_issue_and_closes() -> None:
    core = mock_core()
    assert submit(core, submitted("2")) == {}
    job, requester, count, note, _batch, channel = enqueued(core)
    assert (job, requester, count, note, channel) == (Job.ISSUE_FROM_FORM, REP, 2, "ACME",
                                                      "C0SALES")
    assert core.commands.enqueue.call_args.kwargs["job_kwargs"] == {"customer_ref": ""}


def test_the_forms_crm_reference_travels_with_the_job() -> None:
    core = mock_core()
    assert submit(core, submitted("2", ref=" priya@acme.example ")) == {}
    assert enqueued(core)[0] == Job.ISSUE_FROM_FORM
    assert core.commands.enqueue.call_args.kwargs["job_kwargs"] == {
        "customer_ref": "priya@acme.example"}


@pytest.mark.parametrize(("ref", "says"), [("x" * 201, "to 200 characters (it has 201)"),
                                           ("crm\n42", "control characters")])
def test_a_bad_crm_reference_is_shown_on_its_field(ref: str, says: str) -> None:
    core = mock_core()
    answer = submit(core, submitted("2", ref=ref))
    assert answer["response_action"] == "errors" and list(answer["errors"]) == [surfaces.REF]
    assert says in answer["errors"][surfaces.REF]
    assert not core.commands.enqueue.called


def test_a_bad_count_is_shown_on_its_field() -> None:
    core = mock_core()
    answer = submit(core, submitted("99"))
    assert answer["response_action"] == "errors" and list(answer["errors"]) == [surfaces.COUNT]
    assert not core.commands.enqueue.called


@pytest.mark.parametrize(("restricted", "field"), [(True, surfaces.CHANNEL),
                                                   (False, FORM_UNAVAILABLE)])
def test_a_refused_submission_shows_the_reason_on_the_field_it_concerns(
        restricted: bool, field: str) -> None:
    core = mock_core(allowed=False)
    core.access.restricts_channels = restricted
    assert submit(core, submitted("2")) == {"response_action": "errors",
                                            "errors": {field: REASON}}
    assert not core.commands.enqueue.called


def test_redis_down_at_submission_keeps_the_form_open_with_the_problem() -> None:
    core = redis_down(mock_core())
    answer = submit(core, submitted("2"))
    assert answer["errors"] == {FORM_UNAVAILABLE: messages.problem(StoreUnavailable())["text"]}


def test_send_in_thread_enqueues_links_for_the_messages_thread() -> None:
    core, ack = mock_core(), MagicMock()
    body = {**click_body(), "message": {"user": "U0CUST", "ts": "1700000000.000100"}}
    send_in_thread(ack=ack, body=body, context=context(core))
    job, requester, author, thread_ts, _batch = enqueued(core)
    assert (job, requester, author, thread_ts) == (Job.SEND_IN_THREAD, REP, "U0CUST",
                                                   "1700000000.000100")
    assert acked(ack) == {}


def test_send_in_thread_refused_enqueues_only_the_refusal() -> None:
    core, ack = mock_core(allowed=False), MagicMock()
    body = {**click_body(), "message": {"user": "U0CUST", "ts": "1700000000.000100"}}
    send_in_thread(ack=ack, body=body, context=context(core))
    assert enqueued(core) == (Job.RESPOND, messages.refused(REASON, ["U0ADMIN"]))


# --- the Workflow Builder step --------------------------------------------------------------

STEP = StepExecution("Fx0EXEC", "xwfp-token")


def step(core: MagicMock, **inputs: Any) -> tuple[MagicMock, MagicMock]:
    ack, fail = MagicMock(), MagicMock()
    create_links(ack=ack, inputs={"user_id": "U0REP", "channel_id": "C0SALES", **inputs},
                 body={"team_id": "T0FAKE"}, fail=fail, logger=MagicMock(),
                 context=context(core, function_execution_id=STEP.execution_id,
                                 function_bot_access_token=STEP.token))
    return ack, fail


def test_the_step_enqueues_its_run() -> None:
    core = mock_core()
    ack, fail = step(core, count=2, customer_note="ACME")
    job, requester, count, note, _batch, execution = enqueued(core)
    assert (job, requester, count, note, execution) == (Job.RUN_WORKFLOW_STEP, REP, 2, "ACME",
                                                        STEP)
    assert core.commands.enqueue.call_args.kwargs["job_kwargs"] == {"customer_ref": ""}
    assert acked(ack) == {} and not fail.called


def test_the_steps_customer_ref_input_travels_with_the_job() -> None:
    core = mock_core()
    step(core, count=1, customer_note="ACME", customer_ref="hubspot-12345")
    assert enqueued(core)[0] == Job.RUN_WORKFLOW_STEP
    assert core.commands.enqueue.call_args.kwargs["job_kwargs"] == {
        "customer_ref": "hubspot-12345"}


def test_a_bad_customer_ref_input_ends_the_step_saying_why() -> None:
    core = mock_core()
    step(core, customer_ref="crm\x00")
    job, execution, error = enqueued(core)
    assert (job, execution) == (Job.FAIL_WORKFLOW_STEP, STEP)
    assert "CRM reference can't hold line breaks, tabs or other control characters" in error


def test_a_step_without_its_user_is_failed_by_a_job() -> None:
    core = mock_core()
    step(core, user_id=None)
    assert enqueued(core) == (Job.FAIL_WORKFLOW_STEP, STEP, surfaces.step_error(NO_USER))


def test_a_refused_step_is_failed_by_a_job_and_audited() -> None:
    core = mock_core(allowed=False)
    step(core)
    assert enqueued(core) == (Job.FAIL_WORKFLOW_STEP, STEP, surfaces.step_refused(REASON))
    core.onboarding.refused.assert_called_once_with(REP, "workflow", REASON)


def test_redis_down_fails_the_step_from_the_listener() -> None:
    core = redis_down(mock_core())
    ack, fail = step(core)
    ack.assert_called_once()
    fail.assert_called_once_with(surfaces.step_error(messages.problem(StoreUnavailable())["text"]))


# --- link previews and the App Home ---------------------------------------------------------

def shared(core: MagicMock, *urls: str) -> None:
    event = {"user": "U0REP", "channel": "C0SALES", "message_ts": "1700000000.000100",
             "links": [{"url": url} for url in urls]}
    link_shared(event=event, body={"team_id": "T0FAKE"}, context=context(core),
                logger=MagicMock())


def test_an_onboarding_link_shared_is_previewed_by_a_job() -> None:
    core = mock_core()
    shared(core, LINK, "https://example.com/other")
    assert enqueued(core) == (Job.UNFURL_LINKS, REP,
                              UnfurlTarget("C0SALES", "1700000000.000100"), [LINK])
    core.access.may_preview.assert_called_once_with("U0REP", "C0SALES")


def test_a_refused_preview_is_told_to_the_sharer_only() -> None:
    core = mock_core(allowed=False)
    shared(core, LINK)
    assert enqueued(core) == (Job.TELL_PRIVATELY, "C0SALES", "U0REP",
                              messages.refused(REASON, ["U0ADMIN"]))


def test_other_links_are_not_previewed() -> None:
    core = mock_core()
    shared(core, "https://example.com/isv-onboard/abc")
    assert not core.commands.enqueue.called and not core.access.method_calls


def test_opening_the_home_tab_enqueues_its_refresh() -> None:
    core = mock_core()
    home_opened(event={"tab": "home", "user": "U0REP", "channel": "D0HOME"},
                body={"team_id": "T0FAKE"}, context=context(core), logger=MagicMock())
    assert enqueued(core) == (Job.REFRESH_HOME, REP.model_copy(update={"channel_id": "D0HOME"}))


def test_the_messages_tab_is_not_the_home() -> None:
    core = mock_core()
    home_opened(event={"tab": "messages", "user": "U0REP"}, body={}, context=context(core),
                logger=MagicMock())
    assert not core.commands.enqueue.called


def test_redis_down_leaves_the_home_as_it_was_with_a_warning() -> None:
    core, logger = redis_down(mock_core()), MagicMock()
    home_opened(event={"tab": "home", "user": "U0REP"}, body={"team_id": "T0FAKE"},
                context=context(core), logger=logger)
    logger.warning.assert_called_once()


def test_a_customer_with_live_links_is_answered_in_the_ack_and_nothing_is_enqueued() -> None:
    core = mock_core()
    batch = Batch(batch_id=BATCH, requester=REP, note="ACME", tokens=["t1"],
                  issued_at=datetime(2030, 1, 1, tzinfo=UTC),
                  expires_at=datetime(2030, 1, 2, tzinfo=UTC))
    core.onboarding.existing.return_value = (batch, [])
    with freeze_time("2030-01-01 01:00:00"):
        answer = run(onboard_link, "1 ACME", core)
        assert answer == linkviews.already_issued(batch, [], 1, "ACME")
    assert "Creating" not in answer["text"] and not core.commands.enqueue.called
    core.onboarding.existing.assert_called_once_with(REP, 1, "ACME", "")


def test_redis_down_at_a_click_acks_then_replies_beside_the_clicked_message() -> None:
    core, ack = redis_down(mock_core()), MagicMock()
    batch_button(ack=ack, body=click_body(), action={"action_id": STOP_ACTION, "value": BATCH},
                 context=context(core))
    assert acked(ack) == {}
    core.delivery.reply.assert_called_once_with(
        URL, {**messages.problem(StoreUnavailable()), "replace_original": False})
