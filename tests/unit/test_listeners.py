"""Listeners on their own, as Slack's starter template tests them: Bolt's injected arguments
mocked, the core from `context`."""

from __future__ import annotations

from unittest.mock import MagicMock

from bot.domain.access import Decision
from bot.runtime import jobs
from bot.slack.messages import FORGET_ACTION, STOP_ACTION
from handlers.actions import batch_button

BATCH = "0123456789abcdef0123456789abcdef"


def click(action_id: str, value: str, allowed: bool = True) -> tuple[MagicMock, MagicMock]:
    core, ack, respond = MagicMock(), MagicMock(), MagicMock()
    core.access.may_click.return_value = Decision(allowed, "" if allowed else "Ask an admin.")
    body = {"user": {"id": "U0REP"}, "team": {"id": "T0"}, "channel": {"id": "C0"},
            "response_url": "https://hooks.slack.test/r"}
    batch_button(ack, body, {"action_id": action_id, "value": value}, respond,
                 {"core": core})  # type: ignore[arg-type]
    ack.assert_called_once()
    return core, respond


def test_an_allowed_click_enqueues_its_job_with_the_batch() -> None:
    core, _ = click(STOP_ACTION, BATCH)
    job, reply, clicker, batch_id = core.commands.enqueue.call_args.args
    assert job is jobs.stop_reminders and batch_id == BATCH and clicker.user_id == "U0REP"
    assert reply.url == "https://hooks.slack.test/r"


def test_forget_gets_no_token_and_the_batch() -> None:
    core, _ = click(FORGET_ACTION, BATCH)
    assert core.commands.enqueue.call_args.args[0] is jobs.forget
    assert core.commands.enqueue.call_args.args[3:] == (None, BATCH)


def test_a_refused_click_enqueues_only_the_refusal() -> None:
    core, _ = click(STOP_ACTION, BATCH, allowed=False)
    assert core.commands.enqueue.call_args.args[0] is jobs.respond
    core.onboarding.refused.assert_called_once()
