"""Every door of the bot walked end to end, and everything it sent looked at: the sandbox
marker is on every message and view exactly while Exotel is a stand-in, and a customer note
is inert wherever it is shown, whichever surface it came in by."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from requests.adapters import HTTPAdapter

from bot.exotel.sandbox import LINK_BASE, ExotelSandbox
from bot.slack.core import Core
from bot.slack.delivery import SANDBOX_PREFIX, SANDBOX_TEXT
from bot.slack.inputs import BIDI_CONTROLS
from bot.slack.linkviews import ISSUE_ANYWAY_ACTION
from bot.slack.messages import (
    FORGET_ACTION,
    NEW_LINKS_ACTION,
    RENEW_ACTION,
    SHARE_ACTION,
    STOP_ACTION,
)
from testkit.signed import (
    function_executed_body,
    link_shared_body,
    message_action_body,
    post_signed,
    shortcut_body,
    view_submission_body,
)
from testkit.slack import JSON_PARAMS, FakeSlack
from testkit.wait import wait_until
from tests.blockkit import LINK, blocks_of, mrkdwn_texts, text_objects
from tests.support import Bot, Reply

STEP, FORM, SEND = "create_onboarding_links", "new_onboarding_links", "send_onboarding_link"
CUSTOMER_MESSAGE = {"type": "message", "user": "U0CUST", "ts": "1700000100.000200",
                    "text": "Hi! How do we get WhatsApp set up?", "team": "T0CUST"}
HOSTILE = "ACME \u202eevil *bold* _it_"  # a right-to-left override and live mrkdwn
HOSTILE_REF = "crm\u202eevil*bold*_it_<!channel>"  # the same in a CRM reference (one word)
MESSAGES = ("chat.postMessage", "chat.postEphemeral")
VIEWS = ("views.publish", "views.open")
WAIT = 15  # seconds: every door answers in well under one


# What the bot sent, by the door that made it send it. --------------------------------------


@dataclass
class Sent:
    door: str
    what: str  # "ack", "reply", or the Web API method that carried it
    body: dict[str, Any]  # a message, a view, one link preview, or a step's outputs

    @property
    def is_view(self) -> bool:
        return self.what in (*VIEWS, "chat.unfurl")

    @property
    def is_step(self) -> bool:
        return self.what == "functions.completeSuccess"


@dataclass
class Recorder:
    """Drives the bot the way Slack does and keeps every ack, every reply to a response URL
    and every message, view, preview and step completion that reached the fake Slack."""

    bot: Bot
    sent: list[Sent] = field(default_factory=list)
    doors: dict[str, set[str]] = field(default_factory=dict)  # door -> what it must send
    _door: str = "before any door"
    _calls: int = 0
    _replies: dict[str, int] = field(default_factory=dict)

    @property
    def slack(self) -> FakeSlack:
        return self.bot.slack

    @contextmanager
    def door(self, name: str, *expect: str) -> Iterator[None]:
        self._sweep()  # what came since the last door ended is still that door's
        assert name not in self.doors
        self._door, self.doors[name] = name, set(expect)
        yield
        self._sweep()

    def of(self, door: str, what: str | None = None) -> list[dict[str, Any]]:
        self._sweep()
        return [s.body for s in self.sent if s.door == door and what in (None, s.what)]

    # Slack's side of a door.

    def command(self, command: str, text: str) -> Reply:
        reply = self.bot.command(command, text)
        self._ack(reply.http)
        return reply

    def click(self, action_id: str, value: str) -> Reply:
        reply = self.bot.click(action_id, value)
        self._ack(reply.http)
        return reply

    def signed(self, body: str) -> None:
        self._ack(post_signed(self.bot.url, body))

    def event(self, event: dict[str, Any]) -> None:
        self._ack(self.bot.event(event))

    def _ack(self, http: requests.Response) -> None:
        assert http.status_code == 200, http.text
        body = http.json() if http.content else {}
        if body.get("text") or body.get("blocks"):  # an ack that carries a message
            self.sent.append(Sent(self._door, "ack", body))

    def _sweep(self) -> None:
        with self.slack.lock:
            calls = self.slack.api_calls[self._calls:]
            replies = {name: list(found) for name, found in self.slack.responses.items()}
        self._calls += len(calls)
        for name, found in replies.items():
            for reply in found[self._replies.get(name, 0):]:
                self.sent.append(Sent(self._door, "reply", reply))
            self._replies[name] = len(found)
        for call in calls:
            params = {k: json.loads(v) if k in JSON_PARAMS and isinstance(v, str) else v
                      for k, v in call.params.items()}
            if call.method in MESSAGES or call.method == "functions.completeSuccess":
                self.sent.append(Sent(self._door, call.method, params))
            elif call.method in VIEWS:
                self.sent.append(Sent(self._door, call.method, params["view"]))
            elif call.method == "chat.unfurl":
                self.sent.extend(Sent(self._door, call.method, preview)
                                 for preview in params["unfurls"].values())


def button_value(message: dict[str, Any], action_id: str) -> str:
    for block in blocks_of(message):
        for element in [*block.get("elements", []), block.get("accessory") or {}]:
            if element.get("action_id") == action_id:
                return str(element["value"])
    raise AssertionError(f"no {action_id} button in {message.get('text')!r}")


def posts(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [p for p in slack.params("chat.postMessage") if p.get("channel") == channel]


def form_values(count: str, note: str, channel: str) -> dict[str, Any]:
    return {"count": {"type": "number_input", "value": count},
            "customer_note": {"type": "plain_text_input", "value": note},
            "channel": {"type": "conversations_select", "selected_conversation": channel}}


def home_refreshed(slack: FakeSlack) -> Callable[[], bool]:
    """Whether App Home was published since this was called: a door's last send, when its
    job refreshes the tab after the rest (so the next door starts with the worker idle)."""
    before = len(slack.calls("views.publish"))
    return lambda: len(slack.calls("views.publish")) > before


# 1. The sandbox marker on every door -------------------------------------------------------


class ToFakeExotel(HTTPAdapter):
    """Sends what the bot addresses to Exotel's own host to the fake Exotel instead (the
    network is closed): scheme and host rewritten, path and query kept."""

    def __init__(self, fake_url: str) -> None:
        super().__init__()
        self._fake = urlsplit(fake_url)

    def send(self, request: requests.PreparedRequest, *args: Any,
             **kwargs: Any) -> requests.Response:
        parts = urlsplit(request.url or "")
        request.url = urlunsplit((self._fake.scheme, self._fake.netloc, parts.path,
                                  parts.query, parts.fragment))
        kwargs["proxies"] = {}  # loopback now, whatever the environment says of Exotel
        return super().send(request, *args, **kwargs)


def route_exotel_to(core: Core, fake_url: str) -> None:
    for client in (core.onboarding.exotel, core.poller.exotel):
        assert client._url.startswith("https://api.exotel.com/")
        client._session.mount("https://api.exotel.com", ToFakeExotel(fake_url))


def submit_the_form(walk: Recorder, door: str, note: str) -> None:
    """The form submitted with a channel: its links DMed and posted there, App Home redone."""
    slack = walk.slack
    with walk.door(door, "chat.postMessage", "views.publish"):
        refreshed = home_refreshed(slack)
        walk.signed(view_submission_body(FORM, form_values("1", note, "C0DEALS")))
        wait_until(lambda: posts(slack, "C0DEALS") and len(posts(slack, "DU0REP")) >= 2
                   and refreshed(), WAIT, "the form's links DMed and posted")


def shortcut_a_message(walk: Recorder) -> None:
    """"Send onboarding link" on a customer's message: a link in its thread."""
    slack = walk.slack
    with walk.door("the message shortcut", "chat.postMessage", "views.publish"):
        refreshed = home_refreshed(slack)
        walk.signed(message_action_body(SEND, slack.response_url("thread"), CUSTOMER_MESSAGE,
                                        channel_id="C0SHARED"))
        wait_until(lambda: posts(slack, "C0SHARED") and refreshed(), WAIT,
                   "the link posted in the thread")


def run_a_workflow_step(walk: Recorder, door: str, note: str) -> None:
    """The step run for U0REP: completed with its link, App Home redone."""
    slack = walk.slack
    with walk.door(door, "functions.completeSuccess", "views.publish"):
        refreshed = home_refreshed(slack)
        walk.signed(function_executed_body(STEP, {"user_id": "U0REP", "count": 1,
                                                  "customer_note": note}))
        wait_until(lambda: slack.calls("functions.completeSuccess") and refreshed(), WAIT,
                   "the step done")


def walk_every_door(bot: Bot, exotel: ExotelSandbox, note: str = "Walk Co") -> Recorder:
    walk = Recorder(bot)
    slack = bot.slack
    slack.users["U0CUST"] = {"id": "U0CUST", "team_id": "T0CUST", "name": "priya",
                             "profile": {"real_name": "Priya Rao", "team": "T0CUST"}}
    slack.teams["T0CUST"] = {"id": "T0CUST", "name": "Globex"}

    with walk.door("/onboard-link help", "ack"):
        walk.command("/onboard-link", "help")
    with walk.door("/onboard-link usage error", "ack"):
        walk.command("/onboard-link", "0 x")
    with walk.door("/onboard-link 2 note", "ack", "reply"):
        issued = walk.command("/onboard-link", f"2 {note}").final(WAIT)
    tokens = LINK.findall(json.dumps(issued["blocks"]))
    assert len(tokens) == 2
    with walk.door("/onboard-link list", "ack"):
        walk.command("/onboard-link", "list")
    [listing] = walk.of("/onboard-link list", "ack")
    with walk.door("the same customer again", "ack"):
        walk.command("/onboard-link", f"1 {note}")
    [again] = walk.of("the same customer again", "ack")
    assert "already have" in json.dumps(again)
    with walk.door("Issue a new one anyway", "reply"):
        anyway = walk.click(ISSUE_ANYWAY_ACTION, button_value(again, ISSUE_ANYWAY_ACTION))
        anyway.final(WAIT)
    with walk.door("/check-token help", "ack"):
        walk.command("/check-token", "help")
    with walk.door("/check-token token", "ack", "reply"):
        walk.command("/check-token", tokens[0]).final(WAIT)

    with walk.door("Post to channel", "reply", "chat.postMessage"):
        walk.click(SHARE_ACTION, button_value(issued, SHARE_ACTION)).final(WAIT)
    with walk.door("Stop reminding", "reply"):
        walk.click(STOP_ACTION, button_value(issued, STOP_ACTION)).final(WAIT)
    with walk.door("Forget", "reply"):
        walk.click(FORGET_ACTION, button_value(listing, FORGET_ACTION)).final(WAIT)

    with walk.door("App Home", "views.publish"):
        refreshed = home_refreshed(slack)
        walk.event({"type": "app_home_opened", "user": "U0REP", "tab": "home"})
        wait_until(refreshed, WAIT, "App Home published")
    with walk.door("the form", "views.open"):
        walk.signed(shortcut_body(FORM))  # opened before the ack
    with walk.door("App Home's New links", "views.open"):
        walk.click(NEW_LINKS_ACTION, "")
    submit_the_form(walk, "the form submitted", note)
    [form_token] = LINK.findall(json.dumps(posts(slack, "DU0REP")[0]))
    shortcut_a_message(walk)
    with walk.door("a link preview", "chat.unfurl"):
        walk.signed(link_shared_body([LINK_BASE + tokens[0]]))
        wait_until(lambda: slack.calls("chat.unfurl"), WAIT, "the link unfurled")

    [new_batch] = [b for b in bot.core.store.all_live_batches(50)
                   if b.batch_id == button_value(anyway.final(), STOP_ACTION)]
    with walk.door("a reminder", "chat.postMessage"):
        assert new_batch.reminder_due is not None
        outcome = bot.core.reminder_sender.send(new_batch.batch_id, new_batch.reminder_due)
        assert outcome == "posted to C0SALES"
    [reminder] = walk.of("a reminder", "chat.postMessage")
    with walk.door("Renew", "reply"):
        walk.click(RENEW_ACTION, button_value(reminder, RENEW_ACTION)).final(WAIT)
    with walk.door("the USED DM", "chat.postMessage"):
        exotel.onboard(form_token, 5)
        assert bot.core.poller.poll_once().used == [f"…{form_token[-4:]}"]

    run_a_workflow_step(walk, "a workflow step", note)
    walk.of("a workflow step")  # the last door's sends, collected
    return walk


def marked(sent: Sent) -> bool:
    """The marker as Delivery puts it: the context block last, and on messages the prefix."""
    blocks = blocks_of(sent.body)
    last = blocks[-1] if blocks else {}
    block = last.get("type") == "context" and [e.get("text") for e in last["elements"]] == [
        SANDBOX_TEXT]
    return block and (sent.is_view or str(sent.body.get("text")).startswith(SANDBOX_PREFIX))


def bears_marker(sent: Sent) -> bool:
    """Any trace of it at all."""
    dumped = json.dumps(sent.body, ensure_ascii=False)
    return SANDBOX_TEXT in dumped or SANDBOX_PREFIX.strip() in dumped


@pytest.mark.parametrize("exotel_is", ["the sandbox", "exotel.com"])
def test_every_door_says_sandbox_exactly_while_exotel_is_a_stand_in(
    exotel_is: str, make_bot: Callable[..., Bot], exotel: ExotelSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox = exotel_is == "the sandbox"
    if sandbox:
        bot = make_bot()  # the fake Exotel on loopback, announcing itself
    else:
        bot = make_bot(EXOTEL_BASE_URL=None)  # the default region: https://api.exotel.com
        route_exotel_to(bot.core, exotel.url)
        monkeypatch.setattr(exotel, "announce", False)
    assert bot.core.delivery.sandbox is sandbox

    walk = walk_every_door(bot, exotel)

    assert len(exotel.calls_of("POST")) >= 6  # every link came from the fake Exotel
    for door, expected in walk.doors.items():
        sent = {s.what for s in walk.sent if s.door == door}
        assert expected <= sent, f"{door} sent {sent or 'nothing'}, not {expected}"
    shown = [s for s in walk.sent if not s.is_step]
    steps = [s for s in walk.sent if s.is_step]
    assert len(shown) >= 30 and steps
    for step in steps:  # data for the next step: plain links, whatever Exotel is
        assert not bears_marker(step), step.body
        assert all(LINK.fullmatch(url) for url in step.body["outputs"]["links"].split("\n"))
    if sandbox:
        unmarked = [(s.door, s.what, str(s.body.get("text"))[:60]) for s in shown
                    if not marked(s)]
        assert unmarked == []
    else:
        bearing = [(s.door, s.what) for s in shown if bears_marker(s)]
        assert bearing == []
    assert bot.core.delivery.sandbox is sandbox  # nothing Exotel answered changed that


# 2. Customer notes inert everywhere ----------------------------------------------------------


def test_a_hostile_note_is_inert_in_everything_the_bot_sends_whichever_door_it_came_by(
    bot: Bot, exotel: ExotelSandbox
) -> None:
    walk = Recorder(bot)
    slack, core = bot.slack, bot.core
    slack.users["U0CUST"] = {"id": "U0CUST", "team_id": "T0CUST", "name": "priya",
                             "profile": {"real_name": HOSTILE, "team": "T0CUST"}}
    slack.teams["T0CUST"] = {"id": "T0CUST", "name": "Globex _x_"}

    # In, by every door that takes a note.
    with walk.door("the command", "ack", "reply"):
        issued = walk.command("/onboard-link", f"2 {HOSTILE} ref:{HOSTILE_REF}").final(WAIT)
    with walk.door("the command again", "ack"):
        walk.command("/onboard-link", f"1 {HOSTILE}")
    submit_the_form(walk, "the form", HOSTILE)
    shortcut_a_message(walk)
    run_a_workflow_step(walk, "the workflow step", HOSTILE)
    batches = core.store.all_live_batches(50)
    assert len(batches) == 4
    assert all("\u202e" not in b.note and "evil" in b.note for b in batches)
    assert [b.customer_ref for b in batches if b.customer_ref] == [
        HOSTILE_REF.replace("\u202e", "")]

    # Out, wherever a note is shown.
    with walk.door("a listing", "ack"):
        walk.command("/onboard-link", "list")
    with walk.door("App Home", "views.publish"):
        refreshed = home_refreshed(slack)
        walk.event({"type": "app_home_opened", "user": "U0REP", "tab": "home"})
        wait_until(refreshed, WAIT, "App Home published")
    with walk.door("reminders", "chat.postMessage"):
        for batch in batches:
            assert batch.reminder_due is not None
            core.reminder_sender.send(batch.batch_id, batch.reminder_due)
    with walk.door("/check-token", "reply"):
        walk.command("/check-token", LINK.findall(json.dumps(issued["blocks"]))[0]).final(WAIT)
    with walk.door("Post to channel", "chat.postMessage"):
        walk.click(SHARE_ACTION, button_value(issued, SHARE_ACTION)).final(WAIT)
    links = [link for b in batches for link in core.store.links_of(b)]
    with walk.door("previews", "chat.unfurl"):
        walk.signed(link_shared_body([link.url for link in links][:5]))
        wait_until(lambda: slack.calls("chat.unfurl"), WAIT, "the links unfurled")
    with walk.door("the USED DM", "chat.postMessage"):
        exotel.onboard(links[0].token, 5)
        assert core.poller.poll_once().used
    walk.of("the USED DM")  # the last door's sends, collected

    for door, expected in walk.doors.items():
        sent = [s for s in walk.sent if s.door == door]
        assert expected <= {s.what for s in sent}, door
        if not any(s.is_step for s in sent):  # the note is shown by every door but the step
            assert "evil" in json.dumps([s.body for s in sent]), door
    for sent in walk.sent:
        where = f"{sent.door} ({sent.what})"
        assert not [s for s in strings(sent.body) if BIDI_CONTROLS.search(s)], where
        for text in mrkdwn_texts(sent.body):
            assert "*bold*" not in text and "_it_" not in text and "_x_" not in text, (
                where, text)
    plain = [o["text"] for s in walk.sent for o in text_objects(s.body)
             if o["type"] == "plain_text" and "evil" in o["text"]]
    assert any("*bold*" in text for text in plain)  # shown as typed where it cannot format
    # The reference too: as typed in plain text, inert in mrkdwn, by each door showing it.
    ref_doors = {s.door for s in walk.sent for o in text_objects(s.body)
                 if o["type"] == "plain_text" and "crmevil*bold*_it_<!channel>" in o["text"]}
    assert {"the command", "the command again", "reminders", "Post to channel"} <= ref_doors
    inert = {s.door for s in walk.sent for text in mrkdwn_texts(s.body)
             if "CRM ref crmevil\u2217bold\u2217\u02cdit\u02cd&lt;!channel&gt;" in text}
    assert {"a listing", "App Home"} <= inert


def strings(value: Any) -> Iterator[str]:
    """Every string anywhere inside `value`: texts, fallbacks, button values, alt texts."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for child in value.values():
            yield from strings(child)
    elif isinstance(value, list):
        for child in value:
            yield from strings(child)
