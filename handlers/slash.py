"""What the two slash commands share: reading their text. A usage problem or a request for
help is answered here, the same way for both commands."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from slack_bolt import Ack

from bot.slack import messages
from bot.slack.blocks import Message
from bot.slack.command_text import (
    CheckRequest,
    ForgetRequest,
    Help,
    ListRequest,
    OnboardRequest,
    ReportRequest,
    parse_check,
    parse_onboard,
)
from bot.slack.inputs import UsageError

R = TypeVar("R")


@dataclass(frozen=True)
class Usage(Generic[R]):
    """A command's parser and its two explanations: of a usage problem, and the help."""

    parse: Callable[..., R | Help]  # the text, and the command's limits by name
    problem: Callable[[str], Message]
    help: Callable[[], Message]


ONBOARD_LINK: Usage[OnboardRequest | ListRequest | ForgetRequest | ReportRequest] = Usage(
    parse_onboard, messages.usage_problem, messages.onboard_help)
CHECK_TOKEN: Usage[CheckRequest] = Usage(
    parse_check, messages.check_usage_problem, messages.check_help)


def parse_or_explain(ack: Ack, command: dict[str, Any], usage: Usage[R],
                     **limits: Any) -> R | None:
    """The command's request, or None once the ack explained the usage or gave the help.
    `limits`: what the parser needs of the settings (`report_days`)."""
    try:
        request = usage.parse(command.get("text"), **limits)
    except UsageError as problem:
        ack(**usage.problem(str(problem)))
        return None
    if isinstance(request, Help):
        ack(**usage.help())
        return None
    return request
