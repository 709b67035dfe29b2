"""A Bolt app that only acknowledges /onboard-link: the floor for the bot's ack latency.

Built like the bot's app (same signing secret, a Web API client pointed at the fake Slack,
`process_before_response=True`) but with nothing behind the ack. The benchmark serves it
exactly as the bot is served (`python -m bench.serve bare`).
"""

from __future__ import annotations

import os

from slack_bolt import Ack, App
from slack_sdk import WebClient

from testkit.env import BOT_TOKEN, SIGNING_SECRET

bolt = App(
    # Bolt calls auth.test when it starts: the fake Slack must be at SLACK_API_URL.
    client=WebClient(token=os.environ.get("SLACK_BOT_TOKEN", BOT_TOKEN),
                     base_url=os.environ["SLACK_API_URL"]),
    signing_secret=os.environ.get("SLACK_SIGNING_SECRET", SIGNING_SECRET),
    process_before_response=True,
)


@bolt.command("/onboard-link")
def onboard_link(ack: Ack) -> None:
    ack("ok")
