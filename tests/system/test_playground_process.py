"""`python -m bot try` as a person runs it: a real process tree, driven through its page in
headless Chromium (Debian's, at /usr/bin/chromium, driven by Playwright: no browser download),
found by role and accessible name as a person using a screen reader would."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from testkit.env import ROOT
from testkit.processes import alive, descendants_of, free_port, is_loopback, remote_addresses
from testkit.wait import wait_until

CHROMIUM = "/usr/bin/chromium"
LINK = re.compile(r"messaging\.exotel\.com\/ua-links\/isv-onboard\/")  # \/: in a selector
# What an operator's real setup looks like: none of it may be used, or even reached.
REAL_LOOKING = {
    "SLACK_BOT_TOKEN": "xoxb-2048-4096-realLookingToken", "SLACK_SIGNING_SECRET": "8f14e45fce",
    "SLACK_API_URL": "https://slack.com/api/", "EXOTEL_API_KEY": "live-key",
    "EXOTEL_API_TOKEN": "live-token-1f3a", "EXOTEL_ACCOUNT_SID": "acme",
    "EXOTEL_BASE_URL": "https://api.exotel.com",
    "REDIS_URL": "rediss://:pw@redis.example.com:6380/0",
    "WEBHOOK_URLS": "https://hooks.example.com/onboard",
    "WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}
TIMEOUT_MS = 30_000
USED_TIMEOUT_MS = 90_000  # status polls every 20 s in the playground


class Playground:
    """`python -m bot try --port P` in a folder of its own, in its own process group (as a
    terminal runs it: Ctrl-C goes to the whole group)."""

    def __init__(self, env: dict[str, str] | None = None, dotenv: str = "") -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="onboard-try-"))
        (self.dir / ".env").write_text(dotenv)
        self.out = self.dir / "out.log"
        full = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.dir),
                "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
        with self.out.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "try", "--port", str(self.port)], cwd=self.dir,
                env=full, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"`bot try` exited:\n{self.output()}")
            return "Ready." in self.output()

        try:
            wait_until(ready, timeout, "`python -m bot try` ready")
        except AssertionError as failed:
            raise AssertionError(f"{failed}\n{self.output()}") from None

    def tree(self) -> set[int]:
        return {self.proc.pid, *descendants_of(self.proc.pid)}

    def interrupt(self) -> None:
        """Ctrl-C in the terminal: SIGINT to the foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        for pid in self.tree() if self.proc.poll() is None else set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


class SocketWatch:
    """Samples the remote ends of every socket the playground's processes hold."""

    def __init__(self, playground: Playground) -> None:
        self.playground = playground
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SocketWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.playground.proc.poll() is None:
                # (a process may end while it is read)
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    self.seen |= remote_addresses(self.playground.tree())
            self._stop.wait(0.05)


def test_ctrl_c_leaves_no_process_behind() -> None:
    playground = Playground()
    try:
        playground.wait_ready()
        started = playground.tree()
        assert len(started) >= 4  # try, the bot (gunicorn), its web worker, the workers, Redis
        playground.interrupt()
        wait_until(lambda: not any(alive(pid) for pid in started), 15,
                   "every process of `bot try` gone after Ctrl-C")
        assert playground.proc.wait(1) == 0
        assert "Stopping" in playground.output()
    finally:
        playground.kill()


@pytest.fixture
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        from playwright.sync_api import expect

        expect.set_options(timeout=TIMEOUT_MS)
        found = driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                       args=["--no-sandbox"])  # root, in a container
        yield found
        found.close()


def test_every_door_in_a_browser_with_real_looking_settings_ignored(browser: object) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    closed = f"http://127.0.0.1:{free_port()}"  # a proxy that, if used, would fail everything
    dotenv = "\n".join(f"{k}={v}" for k, v in REAL_LOOKING.items())
    playground = Playground({**REAL_LOOKING, "HTTPS_PROXY": closed, "HTTP_PROXY": closed},
                            dotenv=dotenv)
    try:
        with SocketWatch(playground) as watch:
            playground.wait_ready()
            assert "ignored" in playground.output()
            assert "STATUS_POLL_SECONDS" in playground.output()
            assert "serving Slack events on http://127.0.0.1:" in playground.output()
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(playground.url + "/")
            log = page.get_by_role("log")

            # A command: the links come to you only, on the sandbox.
            box = page.get_by_role("textbox", name="Message")
            box.fill("/onboard-link 2 Playground Co")
            box.press("Enter")
            expect(log.get_by_role("link", name=LINK)).to_have_count(2)
            expect(log).to_contain_text("Only visible to you")
            expect(log).to_contain_text("Sandbox")

            # Post to channel: a message everyone in #sales sees, with the links.
            log.get_by_role("button", name="Post to channel").click()
            posted = log.get_by_role("article").filter(has_not_text="Only visible to you") \
                .filter(has=page.get_by_role("link", name=LINK))
            expect(posted).to_have_count(1)
            expect(posted.get_by_role("link", name=LINK)).to_have_count(2)

            # A link pasted in the channel gets its preview (link_shared, chat.unfurl), and
            # the message shortcut on it sends a link in its thread.
            first = log.get_by_role("link", name=LINK).first.inner_text()
            box.fill(f"for ACME: {first}")
            box.press("Enter")
            pasted = log.get_by_role("article").filter(has_text="for ACME")
            expect(pasted.get_by_role("group", name="Link preview")).to_contain_text("Sandbox")
            pasted.get_by_role("button", name="More actions").click()
            pasted.get_by_role("menuitem", name="Send onboarding link").click()
            expect(log.get_by_role("article").filter(has_text="Replied in a thread")
                   .get_by_role("link", name=LINK)).to_have_count(1)

            # Home shows them: the command's two and the thread's one.
            page.get_by_role("button", name="Home").click()
            home = page.get_by_role("region", name="App Home")
            expect(home).to_contain_text("Playground Co")
            expect(home.get_by_role("link", name=LINK)).to_have_count(3)
            expect(home.get_by_role("button", name="Complete onboarding")).to_have_count(3)
            home.get_by_role("button", name="New links").click()  # Home's buttons work
            from_home = page.get_by_role("dialog", name="New onboarding links")
            from_home.get_by_role("button", name="Cancel").click()
            expect(from_home).to_be_hidden()

            # The shortcut's form: an error under its field, then one link to your DMs.
            page.get_by_role("button", name="Shortcuts").click()
            page.get_by_role("menuitem", name="New onboarding links").click()
            dialog = page.get_by_role("dialog", name="New onboarding links")
            count = dialog.get_by_label("Number of links")
            count.fill("0")
            dialog.get_by_role("button", name="Create").click()
            expect(count).to_have_attribute("aria-invalid", "true")
            expect(count).to_have_accessible_description(re.compile("whole number from 1 to"))
            count.fill("1")
            dialog.get_by_label("Customer note").fill("Dialog Co")
            dialog.get_by_role("button", name="Create").click()
            expect(dialog).to_be_hidden()
            page.get_by_role("button", name="Direct messages").click()
            dm = log.get_by_role("article").filter(has_text="Dialog Co")
            expect(dm.get_by_role("link", name=LINK)).to_have_count(1)

            # A customer finishes onboarding: the bot tells you.
            dm.get_by_role("button", name="Complete onboarding").first.click()
            expect(log.get_by_text("A customer finished onboarding")).to_be_visible(
                timeout=USED_TIMEOUT_MS)
        assert not {a for a in watch.seen if not is_loopback(a)}, watch.seen
        assert watch.seen  # the watch did see the loopback traffic
        assert "xoxb-2048" not in playground.output()
    finally:
        playground.kill()


LAYOUT = [
    {"type": "header", "text": {"type": "plain_text", "text": "Layout check"}},
    {"type": "section", "text": {"type": "mrkdwn", "text":
        "*bold* _italic_ `code` <https://example.com/x|a label> <@U0REP> &lt;b&gt;"},
     "fields": [{"type": "mrkdwn", "text": "*Field one*"}, {"type": "plain_text",
                                                              "text": "field two"}]},
    {"type": "divider"},
    {"type": "context", "elements": [{"type": "mrkdwn", "text": "small print"}]},
    {"type": "actions", "elements": [{"type": "button", "action_id": "go", "value": "v",
                                      "text": {"type": "plain_text", "text": "Go there"}}]},
]


def test_block_kit_is_drawn_and_what_slack_refuses_is_an_error(browser: object) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    playground = Playground()
    try:
        playground.wait_ready()
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(playground.url + "/")
        # What a layout bug in the bot would send: a block type Slack does not know.
        answer = requests.post(f"{playground.url}/api/chat.postMessage", timeout=5, json={
            "channel": "C0SALES", "text": "new layout",
            "blocks": [{"type": "sectoin", "text": {"type": "mrkdwn", "text": "typo"}}]})
        assert answer.json()["error"] == "invalid_blocks"
        alert = page.get_by_role("log").get_by_role("alert")
        expect(alert).to_contain_text("sectoin")
        expect(alert).to_contain_text("Slack would refuse")

        # What Slack accepts is drawn from its blocks, never shown as JSON or markup.
        answer = requests.post(f"{playground.url}/api/chat.postMessage", timeout=5, json={
            "channel": "C0SALES", "text": "layout", "blocks": LAYOUT})
        assert answer.json()["ok"]
        message = page.get_by_role("log").get_by_role("article").filter(has_text="Layout check")
        expect(message.get_by_role("heading", name="Layout check")).to_be_visible()
        expect(message.locator("b", has_text="bold")).to_be_visible()
        expect(message.locator("i", has_text="italic")).to_be_visible()
        expect(message.locator("code", has_text="code")).to_be_visible()
        expect(message.get_by_role("link", name="a label")).to_have_attribute(
            "href", "https://example.com/x")
        expect(message).to_contain_text("@you")
        expect(message).to_contain_text("<b>")  # Slack's &lt;b&gt; is text, not markup
        expect(message.locator("b", has_text="Field one")).to_be_visible()
        expect(message).to_contain_text("field two")
        expect(message.get_by_role("separator")).to_have_count(1)
        expect(message.get_by_role("button", name="Go there")).to_be_visible()
        expect(message).not_to_contain_text('"type"')
    finally:
        playground.kill()
