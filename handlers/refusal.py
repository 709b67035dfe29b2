"""Turning away a user the access policy refused: the refusal is audited, the user told
whom to ask. Every listener that authorises refuses this one way."""

from __future__ import annotations

from bot.domain.models import Requester
from bot.slack import messages
from bot.slack.blocks import Message
from bot.slack.core import Core


def refusal(core: Core, requester: Requester, action: str, reason: str) -> Message:
    core.onboarding.refused(requester, action, reason)
    return messages.refused(reason, core.access.admins)
