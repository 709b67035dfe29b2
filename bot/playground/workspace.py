"""The playground's Slack: one workspace, the channel #sales, you and the bot, shown as a
page in a browser.

It is the stand-in Slack (bot.playground.slack_api) with what a person needs on top: what
the bot posts, replies and publishes kept as the page shows it (channel messages, ephemeral
replies, DMs, App Home, an open modal, Block Kit Slack refused), and what the page does
(type a command or a message, click a button, open Home, a shortcut or a form) sent to the
bot as the signed requests Slack sends."""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import requests

from bot.exotel.sandbox import LINK_BASE
from bot.playground import blockkit, signed, slack_api
from bot.playground.slack_api import SlackStandIn

log = logging.getLogger(__name__)

CHANNEL = signed.CHANNEL
CHANNEL_NAME = "sales"
YOU = signed.USER
BOT_USER = "U0BOT"
DM = "D" + YOU  # what conversations.open gives for a DM with you
REQUEST_TIMEOUT = 10  # seconds: Slack waits 3 s for an ack; the playground is less strict
# A link as the sandbox issues it; its group is the token.
LINK = re.compile(re.escape(LINK_BASE) + r"([0-9a-f-]+)")
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
              "/playground.js": ("playground.js", "text/javascript; charset=utf-8"),
              "/playground.css": ("playground.css", "text/css; charset=utf-8")}


@dataclass
class Shown:
    """A message as the page shows it."""

    id: int
    where: str  # "channel" or "dm"
    author: str  # "you" or "bot"
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    ephemeral: bool = False
    ts: str = ""
    error: str = ""  # what Slack refused (the message is the refusal itself)
    previews: list[dict[str, Any]] = field(default_factory=list)  # chat.unfurl's
    tokens: list[str] = field(default_factory=list)  # onboarding links' tokens in it
    in_thread: bool = False  # a reply in a message's thread (shown in the channel, marked)


class Workspace(SlackStandIn):
    """The stand-in Slack of `python -m bot try`, serving its page at `url`."""

    def __init__(self, port: int, signing_secret: str,
                 complete: Callable[[str], bool] | None = None) -> None:
        super().__init__(port)
        self.signing_secret = signing_secret
        self.bot_url = ""  # where the bot listens: set once its port is known
        self._complete = complete or (lambda token: False)
        self.shown: list[Shown] = []
        self.home: dict[str, Any] | None = None
        self.modal: dict[str, Any] | None = None
        self.modal_errors: dict[str, str] = {}
        self.version = 0  # changes with anything shown: the page redraws when it does
        self._ids = itertools.count(1)
        self._sources: dict[str, int | None] = {}  # response URL name -> its message's id
        self.users = {YOU: {"id": YOU, "name": "you", "real_name": "You",
                            "profile": {"display_name": "you"}}}
        self.teams = {signed.TEAM: {"id": signed.TEAM, "name": "Playground",
                                    "domain": "playground"}}

    # What the bot sends: the stand-in's answers, kept for the page.

    def _answer(self, method: str, params: dict[str, Any],
                authorization: str | None = None) -> dict[str, Any]:
        answer = super()._answer(method, params, authorization)
        if not answer.get("ok"):
            return answer
        decoded = slack_api.decoded(params)
        if method == "chat.postMessage":
            channel = str(decoded.get("channel"))
            shown = self._show("dm" if channel.startswith("D") else "channel", "bot", decoded,
                               ts=str(answer.get("ts", "")))
            if decoded.get("thread_ts"):
                with self.lock:
                    shown.in_thread = True
        elif method == "chat.postEphemeral":
            self._show("channel", "bot", decoded, ephemeral=True)
        elif method == "views.publish":
            with self.lock:
                self.home = decoded.get("view")
                self.version += 1
        elif method in ("views.open", "views.push", "views.update"):
            with self.lock:
                self.modal, self.modal_errors = decoded.get("view"), {}
                self.version += 1
        elif method == "chat.unfurl":
            self._unfurled(str(decoded.get("ts")), decoded.get("unfurls") or {})
        return answer

    def respond(self, name: str, params: dict[str, Any], arrived: float) -> tuple[int, bytes]:
        """A response URL's reply, applied as Slack applies it: a new message, or the one
        it belongs to replaced or deleted."""
        status, body = super().respond(name, params, arrived)
        if status != 200:
            return status, body
        with self.lock:
            source = self._sources.get(name)
            button = name.startswith("click-")
        original = self._find(source) if source is not None else None
        replace = params.get("replace_original", button)  # a button's reply replaces
        if params.get("delete_original") and original is not None:
            self._change(original.id, None)
        elif replace and original is not None:
            self._change(original.id, params)
        else:
            shown = self._show(original.where if original else "channel", "bot", params,
                               ephemeral=params.get("response_type") != "in_channel")
            with self.lock:
                self._sources[name] = shown.id
        return status, body

    def rejected(self, where: str, problems: list[str]) -> None:
        super().rejected(where, problems)
        text = f"Slack would refuse this from the bot ({where}): " + "; ".join(problems)
        self._show("channel", "bot", {"text": text}, error=text)

    # What the page does: requests to the bot, signed as Slack signs them.

    def send(self, text: str) -> dict[str, Any]:
        """The message box: a slash command goes to the bot; anything else is posted to
        #sales, and onboarding links in it are shown to the bot (link_shared)."""
        text = text.strip()
        if not text:
            return {"ok": False, "error": "empty"}
        if text.startswith("/"):
            command, _, rest = text.partition(" ")
            name = self.new_response_url("command", None)
            answer = self._to_bot(signed.command_body(command, rest.strip(),
                                                      self.response_url(name)))
            self._acked(answer, name)
            return {"ok": answer.status_code == 200, "status": answer.status_code}
        shown = self._show("channel", "you", {"text": text}, ts=self._next_ts())
        urls = [m.group(0) for m in LINK.finditer(text)]
        if urls:
            self._to_bot(signed.link_shared_body(urls, message_ts=shown.ts))
        return {"ok": True}

    def click(self, source: str, action_id: str, value: str, block_id: str) -> dict[str, Any]:
        """A button: on App Home (`source` "home") or on the message of that id."""
        if source == "home":
            body = signed.home_action_body(action_id, value, self.home or {},
                                           block_id=block_id)
            answer = self._to_bot(body)
            return {"ok": answer.status_code == 200}
        message = self._find(int(source)) if source.isdigit() else None
        if message is None:
            return {"ok": False, "error": "no such message"}
        name = self.new_response_url("click", message.id)
        body = signed.action_body(
            action_id, value, self.response_url(name), block_id=block_id,
            channel_id=DM if message.where == "dm" else CHANNEL,
            message=None if message.ephemeral else {"ts": message.ts, "text": message.text,
                                                    "blocks": message.blocks},
            is_ephemeral=message.ephemeral)
        answer = self._to_bot(body)
        self._acked(answer, name)
        return {"ok": answer.status_code == 200}

    def open_home(self) -> dict[str, Any]:
        answer = self._to_bot(signed.event_body(signed.home_opened_event()))
        return {"ok": answer.status_code == 200}

    def shortcut(self, callback_id: str) -> dict[str, Any]:
        answer = self._to_bot(signed.shortcut_body(callback_id))
        return {"ok": answer.status_code == 200}

    def message_shortcut(self, source: int, callback_id: str) -> dict[str, Any]:
        """A message shortcut on the message of that id ("Send onboarding link")."""
        message = self._find(source)
        if message is None or message.ephemeral:
            return {"ok": False, "error": "no such message"}
        name = self.new_response_url("shortcut", None)
        author = {"user": YOU} if message.author == "you" else {"bot_id": "B0BOT",
                                                                "username": "onboard-bot"}
        body = signed.message_action_body(
            callback_id, self.response_url(name),
            {"type": "message", "ts": message.ts, "text": message.text, **author},
            channel_id=DM if message.where == "dm" else CHANNEL)
        answer = self._to_bot(body)
        self._acked(answer, name)
        return {"ok": answer.status_code == 200}

    def submit(self, state: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The open modal's submit button, with its inputs' state (block id, then action id).
        The bot's answer closes it, or keeps it open with errors under its fields."""
        view = self.modal or {}
        body = signed.view_submission_body(
            str(view.get("callback_id", "")), {}, state=state,
            view={"id": view.get("id", "V0FORM"),
                  "private_metadata": view.get("private_metadata", ""),
                  "blocks": view.get("blocks", [])})
        answer = self._to_bot(body)
        reply = _json_of(answer)
        with self.lock:
            action = reply.get("response_action")
            if action == "errors":
                self.modal_errors = dict(reply.get("errors") or {})
            elif action in ("update", "push"):
                self.modal, self.modal_errors = reply.get("view"), {}
            elif answer.status_code == 200:
                self.modal, self.modal_errors = None, {}
            self.version += 1
        return {"ok": answer.status_code == 200, "errors": self.modal_errors}

    def close_modal(self) -> dict[str, Any]:
        with self.lock:
            self.modal, self.modal_errors = None, {}
            self.version += 1
        return {"ok": True}

    def complete(self, token: str) -> dict[str, Any]:
        """Customers onboard with the link on the sandbox until Exotel reports it USED."""
        return {"ok": self._complete(token)}

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {"version": self.version, "messages": [asdict(m) for m in self.shown],
                    "home": self.home, "home_tokens": _tokens("", self.home or {}),
                    "modal": self.modal, "modal_errors": self.modal_errors,
                    "channel": CHANNEL_NAME}

    # The page itself.

    def page(self, method: str, path: str, body: bytes,
             headers: Mapping[str, str]) -> tuple[int, bytes, str] | None:
        path = path.split("?")[0]
        if path in PAGE_FILES or path.startswith("/ui/"):
            # Only this machine's browser, on this address: another site's page can neither
            # reach the page through a name of its own (DNS rebinding) nor post to /ui/ (a
            # JSON body needs a CORS preflight, which is never answered).
            host = (headers.get("host") or "").rsplit(":", 1)[0]
            if host not in ("127.0.0.1", "localhost"):
                return 403, b"the playground answers http://127.0.0.1 only", "text/plain"
            if method == "POST" and "application/json" not in (headers.get("content-type")
                                                               or ""):
                return 415, b"JSON only", "text/plain"
        if method == "GET" and path in PAGE_FILES:
            name, content_type = PAGE_FILES[path]
            return 200, (resources.files("bot.playground") / "page" / name).read_bytes(), \
                content_type
        if method == "GET" and path == "/ui/state":
            return _json_answer(self.state())
        if method != "POST" or not path.startswith("/ui/"):
            return None
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return _json_answer({"ok": False, "error": "not JSON"}, 400)
        return _json_answer(self._ui(path.removeprefix("/ui/"), data))

    def _ui(self, what: str, data: dict[str, Any]) -> dict[str, Any]:
        try:
            if what == "send":
                return self.send(str(data.get("text", "")))
            if what == "click":
                return self.click(str(data.get("source")), str(data.get("action_id")),
                                  str(data.get("value", "")), str(data.get("block_id", "b")))
            if what == "message_shortcut":
                return self.message_shortcut(int(data.get("source") or 0),
                                             str(data.get("callback_id")))
            if what == "home":
                return self.open_home()
            if what == "shortcut":
                return self.shortcut(str(data.get("callback_id")))
            if what == "submit":
                return self.submit(dict(data.get("state") or {}))
            if what == "close":
                return self.close_modal()
            if what == "complete":
                return self.complete(str(data.get("token")))
        except requests.RequestException as error:
            self._show("channel", "bot", {"text": f"The bot did not answer: {error}"},
                       error="The bot did not answer")
            return {"ok": False, "error": "the bot did not answer"}
        return {"ok": False, "error": f"unknown action {what}"}

    # Keeping what is shown.

    def _to_bot(self, body: str) -> requests.Response:
        with loopback_session() as session:
            return session.post(f"{self.bot_url}/slack/events", data=body.encode(),
                                headers=signed.sign(body, self.signing_secret),
                                timeout=REQUEST_TIMEOUT)

    def _acked(self, answer: requests.Response, name: str) -> None:
        """A command's ack that carries a message: shown as Slack shows it (to you only,
        unless it says in_channel), and what the response URL's replies replace. (Slack
        shows nothing of a click's or a shortcut's ack.)"""
        if answer.status_code != 200:
            self._show("channel", "bot", {"text": f"The bot answered HTTP {answer.status_code}"},
                       error=f"HTTP {answer.status_code}")
            return
        reply = _json_of(answer)
        if not name.startswith("command-") or not (reply.get("text") or reply.get("blocks")):
            return
        refused = blockkit.problems(reply.get("blocks"))
        if refused:
            self.rejected("the command's ack", refused)
            return
        shown = self._show("channel", "bot", reply,
                           ephemeral=reply.get("response_type") != "in_channel")
        with self.lock:
            self._sources[name] = shown.id

    def new_response_url(self, kind: str, source: int | None) -> str:
        """The name of a new response URL for a command ("command") or a click ("click") on
        the message `source`: what its replies replace or delete."""
        with self.lock:
            name = f"{kind}-{next(self._ids)}"
            self._sources[name] = source
        return name

    def _show(self, where: str, author: str, message: dict[str, Any], *,
              ephemeral: bool = False, ts: str = "", error: str = "") -> Shown:
        blocks = message.get("blocks") or []
        text = str(message.get("text") or "")
        ts = ts or self._next_ts()  # an ephemeral message has one too, of its own
        with self.lock:
            shown = Shown(next(self._ids), where, author, text,
                          blocks if isinstance(blocks, list) else [], ephemeral, ts, error,
                          [], _tokens(text, blocks))
            self.shown.append(shown)
            self.version += 1
        return shown

    def _change(self, message_id: int, replacement: dict[str, Any] | None) -> None:
        with self.lock:
            for index, shown in enumerate(self.shown):
                if shown.id != message_id:
                    continue
                if replacement is None:
                    del self.shown[index]
                else:
                    blocks = replacement.get("blocks") or []
                    shown.text = str(replacement.get("text") or "")
                    shown.blocks = blocks if isinstance(blocks, list) else []
                    shown.tokens = _tokens(shown.text, shown.blocks)
                    if replacement.get("response_type") == "in_channel":
                        shown.ephemeral = False
                self.version += 1
                return

    def _find(self, message_id: int) -> Shown | None:
        with self.lock:
            return next((m for m in self.shown if m.id == message_id), None)

    def _unfurled(self, ts: str, unfurls: dict[str, Any]) -> None:
        with self.lock:
            for shown in self.shown:
                if shown.ts == ts:
                    shown.previews = [{"url": url, **preview}
                                      for url, preview in unfurls.items()]
                    self.version += 1


def loopback_session() -> requests.Session:
    """A session for the bot on 127.0.0.1: never through the environment's proxies."""
    session = requests.Session()
    session.trust_env = False
    return session


def _json_of(answer: requests.Response) -> dict[str, Any]:
    try:
        found = answer.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _json_answer(value: dict[str, Any], status: int = 200) -> tuple[int, bytes, str]:
    return status, json.dumps(value).encode(), "application/json"


def _tokens(text: str, blocks: Any) -> list[str]:
    """The onboarding links' tokens in a message, each once, in order."""
    found = LINK.findall(text + json.dumps(blocks))
    return list(dict.fromkeys(found))
