"""The work a command does after its ack, each a function from the core to a reply.

They run in the background process (see `bot.background`), so they are module-level
functions whose arguments pickle. A task returning None sends no reply.
"""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

from bot import messages
from bot.core import Core
from bot.models import Requester

KEEP_ORIGINAL = {"replace_original": False}  # button replies leave the clicked message alone


def issue_links(core: Core, requester: Requester, count: int, note: str) -> messages.Message:
    message = messages.issued(core.onboarding.issue(requester, count, note))
    publish_home(core, requester)
    return message


def check_token(core: Core, requester: Requester, token: str) -> messages.Message:
    return messages.checked(core.onboarding.check(requester, token))


def renew_batch(core: Core, requester: Requester, batch_id: str) -> messages.Message:
    result = core.onboarding.renew(requester, batch_id)
    message = messages.renew_in_progress() if result is None else messages.issued(result)
    publish_home(core, requester)
    return {**message, **KEEP_ORIGINAL}


def stop_reminders(core: Core, requester: Requester, batch_id: str) -> messages.Message:
    core.onboarding.stop_reminders(requester, batch_id)
    return {**messages.stopped(), **KEEP_ORIGINAL}


def forget(core: Core, requester: Requester, token: str | None,
           batch_id: str | None) -> messages.Message:
    result = core.onboarding.forget(requester, token=token, batch_id=batch_id,
                                    is_admin=core.access.is_admin(requester.user_id))
    publish_home(core, requester)
    return {**messages.forgotten(result), **KEEP_ORIGINAL}


def share_batch(core: Core, requester: Requester, batch_id: str) -> messages.Message:
    batch, links = core.onboarding.share(requester, batch_id,
                                         is_admin=core.access.is_admin(requester.user_id))
    try:
        core.slack.chat_postMessage(channel=batch.requester.channel_id,
                                    **messages.shared(batch, links, batch.requester))
    except SlackApiError as error:
        return {**messages.cannot_post_here(str(error.response.get("error"))), **KEEP_ORIGINAL}
    return {**messages.posted_to_channel(), **KEEP_ORIGINAL}


def say(core: Core, message: messages.Message) -> messages.Message:
    """A reply worked out in the ack path, sent from here so the ack need not wait for it."""
    return {**message, **KEEP_ORIGINAL}


def publish_home(core: Core, requester: Requester) -> None:
    """Refresh the requester's App Home tab (see `bot.home`)."""
    core.home.refresh(requester)
