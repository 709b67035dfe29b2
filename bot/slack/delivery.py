"""Everything the bot sends to Slack goes out here, and here the sandbox marker goes on it.

Replies to response URLs, posts, thread replies, DMs, files uploaded to DMs, ephemeral
messages, App Home views, modals, link previews, workflow step completions, and (through
`MarkedAck`) the acks themselves: while the bot talks to a stand-in Exotel, every message
and view says so, so that nobody sends its links to a customer. A workflow step's outputs
are data for the next step, not a message: they stay plain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from slack_bolt import Ack, BoltResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from slack_sdk.models.blocks import ContextBlock, MarkdownTextObject
from slack_sdk.webhook import WebhookClient

from bot.engine.queue import StepExecution
from bot.slack.blocks import MAX_BLOCKS, Message, as_post

log = logging.getLogger(__name__)

SANDBOX_TEXT = (":test_tube: *Sandbox*: Exotel here is `python -m bot sandbox`; these links "
                "are not real.")
SANDBOX_PREFIX = "[sandbox] "
MAX_VIEW_BLOCKS = 100  # App Home and modals
M = TypeVar("M", bound=Message)


# Rendered once: every message on the sandbox carries it, acks included.
_MARKER = ContextBlock(elements=[MarkdownTextObject(text=SANDBOX_TEXT)]).to_dict()


def _marker() -> dict[str, Any]:
    return _MARKER


class Delivery:
    """The bot's one way to Slack. `sandbox` says whether Exotel is a stand-in (asked at
    each send: a worker learns it from Exotel's answers too)."""

    def __init__(self, slack: WebClient, sandbox: Callable[[], bool], *,
                 lookups: WebClient | None = None) -> None:
        self.slack = slack
        self._sandbox = sandbox
        self._lookups = lookups or slack  # inside an ack's 3 s: short, no retries

    @property
    def sandbox(self) -> bool:
        return self._sandbox()

    # The marker.

    def mark(self, message: M) -> M:
        """`message` as it goes out: with the sandbox marker while on the sandbox."""
        if not self.sandbox or message["text"].startswith(SANDBOX_PREFIX):
            return message
        plain: Message = message
        marked = dict(message)
        marked["text"] = SANDBOX_PREFIX + message["text"]
        marked["blocks"] = [*plain.get("blocks", [])[:MAX_BLOCKS - 1], _marker()]
        return marked  # type: ignore[return-value]  # the same TypedDict, two keys replaced

    def mark_file(self, title: str, comment: str) -> tuple[str, str]:
        """A file's title and comment as they go out: saying Sandbox while on the sandbox."""
        if not self.sandbox:
            return title, comment
        return SANDBOX_PREFIX + title, f"{comment}\n{SANDBOX_TEXT}"

    def mark_view(self, view: dict[str, Any]) -> dict[str, Any]:
        if not self.sandbox:
            return view
        return {**view, "blocks": [*view.get("blocks", [])[:MAX_VIEW_BLOCKS - 1], _marker()]}

    # Sending. Methods that raise SlackApiError leave what to do about it to the caller.

    def reply(self, url: str | None, message: Message | None) -> None:
        """To a command's or button's response URL; a failure is logged, not raised."""
        if url is None or message is None:
            return
        try:
            WebhookClient(url, timeout=10, retry_handlers=[ConnectionErrorRetryHandler()]
                          ).send_dict(dict(self.mark(message)))
        except Exception:
            log.exception("could not send the reply to Slack")

    def post(self, channel: str, message: Message, *, thread_ts: str | None = None,
             metadata: dict[str, Any] | None = None) -> None:
        extra: dict[str, Any] = {}
        if thread_ts is not None:
            extra["thread_ts"] = thread_ts
        if metadata is not None:
            extra["metadata"] = metadata
        self.slack.chat_postMessage(channel=channel, **as_post(self.mark(message)), **extra)

    def open_dm(self, user: str) -> str:
        return str(self.slack.conversations_open(users=user)["channel"]["id"])

    def direct_message(self, user: str, message: Message) -> None:
        self.post(self.open_dm(user), message)

    def tell(self, user: str, message: Message | None) -> None:
        """A DM that, if Slack refuses it, is logged: nobody else is left to tell."""
        if message is None:
            return
        try:
            self.direct_message(user, message)
        except SlackApiError as error:
            log.error("could not send %s a direct message: %s", user,
                      error.response.get("error"))

    def upload_to_dm(self, user: str, *, content: str, filename: str, title: str,
                     comment: str) -> str:
        """A file in `user`'s DM with the bot, with `comment` (mrkdwn the bot wrote), through
        Slack's external upload flow (files.getUploadURLExternal, a POST of the content to
        the URL it gives, files.completeUploadExternal: slack_sdk's files_upload_v2). The
        file's id; SlackApiError (or SlackRequestError) if refused. On the sandbox the title
        and comment say so."""
        title, comment = self.mark_file(title, comment)
        answer = self.slack.files_upload_v2(channel=self.open_dm(user), content=content,
                                            filename=filename, title=title,
                                            initial_comment=comment)
        return str((answer.get("file") or {}).get("id", ""))

    def ephemeral(self, channel: str, user: str, message: Message) -> None:
        self.slack.chat_postEphemeral(channel=channel, user=user, **as_post(self.mark(message)))

    def publish_home(self, user: str, view: dict[str, Any]) -> None:
        self.slack.views_publish(user_id=user, view=self.mark_view(view))

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> None:
        """A modal, within the trigger's 3 s: through the short look-up client."""
        self._lookups.views_open(trigger_id=trigger_id, view=self.mark_view(view))

    def unfurl(self, where: dict[str, Any], unfurls: dict[str, dict[str, Any]]) -> None:
        marked = {url: self.mark_view(preview) for url, preview in unfurls.items()}
        self.slack.chat_unfurl(**where, unfurls=marked)

    def complete_step(self, execution: StepExecution, *, outputs: dict[str, str] | None = None,
                      error: str | None = None) -> None:
        """End a workflow step with its own just-in-time token; SlackApiError if refused."""
        client = WebClient(token=execution.token, base_url=self.slack.base_url,
                           timeout=10, retry_handlers=[
                               ConnectionErrorRetryHandler(),
                               RateLimitErrorRetryHandler(max_retry_count=3)])
        if error is None:
            client.functions_completeSuccess(function_execution_id=execution.execution_id,
                                             outputs=outputs or {})
        else:
            client.functions_completeError(function_execution_id=execution.execution_id,
                                           error=error)


class MarkedAck(Ack):
    """Bolt's `ack`, with the sandbox marker on the message it carries (if any): the app
    factory hands it to every listener while the bot is on the sandbox."""

    def __init__(self, delivery: Delivery) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Bolt's Ack.__init__ is untyped
        self._delivery = delivery

    def __call__(  # type: ignore[override]  # Bolt's own parameters, passed on as they are
            self, text: str | dict[str, Any] = "",
            blocks: Sequence[dict[str, Any]] | None = None, **rest: Any) -> BoltResponse:
        if isinstance(text, str) and text:
            message: Message = {"text": text}
            if blocks:
                message["blocks"] = list(blocks)
            marked = self._delivery.mark(message)
            text, blocks = marked["text"], marked.get("blocks")
        return super().__call__(text, blocks, **rest)
