"""The work a command does after its ack, each a function from the core to a reply.

They run in the background process (see `bot.background`), so they are module-level
functions whose arguments pickle.
"""

from __future__ import annotations

from bot import messages
from bot.core import Core
from bot.models import Requester


def issue_links(core: Core, requester: Requester, count: int, note: str) -> messages.Message:
    return messages.issued(core.onboarding.issue(requester, count, note))


def check_token(core: Core, token: str) -> messages.Message:
    return messages.checked(core.onboarding.check(token))


def renew_batch(core: Core, requester: Requester, batch_id: str) -> messages.Message:
    result = core.onboarding.renew(requester, batch_id)
    message = messages.renew_in_progress() if result is None else messages.issued(result)
    return {**message, "replace_original": False}  # keep the reminder as it was


def stop_reminders(core: Core, batch_id: str) -> messages.Message:
    core.onboarding.stop_reminders(batch_id)
    return {**messages.stopped(), "replace_original": False}
