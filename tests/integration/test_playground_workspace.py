"""The playground's Slack without a browser or a bot: what the bot sends is kept as Slack
shows it (response URL replies, replacements, deletions), and Block Kit Slack would refuse is
refused and shown as an error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.playground.workspace import Workspace

SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*hello*"}}


@pytest.fixture
def workspace() -> Iterator[Workspace]:
    found = Workspace(0, "secret").start()
    yield found
    found.stop()


def texts(workspace: Workspace, where: str = "channel") -> list[str]:
    return [m["text"] for m in workspace.state()["messages"] if m["where"] == where]


def test_posts_and_dms_are_kept_where_slack_shows_them(workspace: Workspace) -> None:
    client = WebClient(token="xoxb-playground", base_url=workspace.api_url)
    client.chat_postMessage(channel="C0SALES", text="to the channel", blocks=[SECTION])
    dm = client.conversations_open(users="U0REP")["channel"]["id"]
    client.chat_postMessage(channel=dm, text="to you")
    client.chat_postEphemeral(channel="C0SALES", user="U0REP", text="only you")
    assert texts(workspace) == ["to the channel", "only you"]
    assert texts(workspace, "dm") == ["to you"]
    messages = workspace.state()["messages"]
    assert messages[0]["blocks"] == [SECTION] and not messages[0]["ephemeral"]
    assert messages[2]["ephemeral"]


def test_response_urls_reply_replace_and_delete_as_slack_does(workspace: Workspace) -> None:
    name = workspace.new_response_url("command", None)
    url = workspace.response_url(name)
    requests.post(url, json={"text": "Creating 2 links…"}, timeout=5)
    requests.post(url, json={"text": "two links", "replace_original": True}, timeout=5)
    assert texts(workspace) == ["two links"]  # replaced, not beside
    requests.post(url, json={"text": "more", "response_type": "ephemeral"}, timeout=5)
    assert texts(workspace) == ["two links", "more"]
    requests.post(url, json={"delete_original": True}, timeout=5)
    assert texts(workspace) == ["two links"]
    source = workspace.state()["messages"][0]["id"]
    click = workspace.new_response_url("click", source)
    requests.post(workspace.response_url(click), json={"text": "posted"}, timeout=5)
    assert texts(workspace) == ["posted"]  # a button's reply replaces its message
    requests.post(workspace.response_url(click),
                  json={"text": "beside", "replace_original": False}, timeout=5)
    assert texts(workspace) == ["posted", "beside"]


def test_block_kit_slack_would_refuse_is_refused_and_shown(workspace: Workspace) -> None:
    client = WebClient(token="xoxb-playground", base_url=workspace.api_url)
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel="C0SALES", text="bad",
                                blocks=[{"type": "carousel_of_dreams"}])
    assert refused.value.response["error"] == "invalid_blocks"
    (shown,) = workspace.state()["messages"]
    assert "carousel_of_dreams" in shown["error"] and "chat.postMessage" in shown["error"]
    name = workspace.new_response_url("command", None)
    long = {"type": "header", "text": {"type": "plain_text", "text": "x" * 200}}
    answer = requests.post(workspace.response_url(name), json={"text": "t", "blocks": [long]},
                           timeout=5)
    assert (answer.status_code, answer.text) == (400, "invalid_blocks")
    assert len(workspace.state()["messages"]) == 2 and workspace.replies(name) == []
    with pytest.raises(SlackApiError):
        client.views_publish(user_id="U0REP", view={"type": "home", "blocks": [long]})
    assert workspace.state()["home"] is None


def test_the_page_and_its_script_are_served(workspace: Workspace) -> None:
    page = requests.get(workspace.url + "/", timeout=5)
    assert page.status_code == 200 and 'aria-label="Message"' in page.text
    assert 'role="log"' in page.text
    script = requests.get(workspace.url + "/playground.js", timeout=5)
    assert script.status_code == 200 and "block_id" in script.text
    assert requests.get(workspace.url + "/ui/state", timeout=5).json()["version"] == 0


def test_only_this_machines_browser_may_drive_it(workspace: Workspace) -> None:
    rebound = requests.get(workspace.url + "/", headers={"Host": "evil.example:80"}, timeout=5)
    assert rebound.status_code == 403
    form = requests.post(workspace.url + "/ui/send", data="text=/onboard-link 50",
                         headers={"Content-Type": "text/plain"}, timeout=5)
    assert form.status_code == 415  # what another site's page can send without a preflight
    assert workspace.state()["messages"] == []


def test_complete_onboarding_turns_a_sandbox_link_used() -> None:
    from bot.exotel.sandbox import DEFAULTS, LINK_BASE, ExotelSandbox

    sandbox = ExotelSandbox(DEFAULTS["EXOTEL_API_KEY"], DEFAULTS["EXOTEL_API_TOKEN"],
                            DEFAULTS["EXOTEL_ACCOUNT_SID"]).start()
    workspace = Workspace(0, "secret",
                          complete=sandbox.complete).start()
    try:
        issued = requests.post(f"{sandbox.url}/v2/accounts/sandbox/isv", timeout=5, auth=(
            DEFAULTS["EXOTEL_API_KEY"], DEFAULTS["EXOTEL_API_TOKEN"])).json()
        url = issued["response"]["whatsapp"]["isv"]["data"]["onboarding_url"]
        token = url.removeprefix(LINK_BASE)
        sandbox.onboard(token, 2)  # two customers already
        client = WebClient(token="xoxb-playground", base_url=workspace.api_url)
        client.chat_postMessage(channel="DU0REP", text=f"1. {url}")
        (shown,) = workspace.state()["messages"]
        assert shown["tokens"] == [token] and shown["where"] == "dm"
        assert workspace.complete(token) == {"ok": True}
        assert sandbox.status(token) == "USED"
        assert workspace.complete("never-issued") == {"ok": False}
    finally:
        workspace.stop()
        sandbox.stop()
