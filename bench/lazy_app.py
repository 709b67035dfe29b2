"""The idiomatic Bolt way to do the bot's work: the Exotel call in a `lazy` listener.

Acks at once, then Bolt runs `create_link` on its listener thread pool in the web process:
one POST to Exotel's ISV API with `requests`, and the link sent back with `respond()`. No
queue, no worker, no quota, no tracking: the comparison for the bot's ack latency
(`python -m bench.serve lazy`).
"""

from __future__ import annotations

import os

import requests
from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from testkit.env import BOT_TOKEN, SIGNING_SECRET

bolt = App(
    client=WebClient(token=os.environ.get("SLACK_BOT_TOKEN", BOT_TOKEN),
                     base_url=os.environ["SLACK_API_URL"]),
    signing_secret=os.environ.get("SLACK_SIGNING_SECRET", SIGNING_SECRET),
    process_before_response=True,
)
EXOTEL_URL = (f"{os.environ['EXOTEL_BASE_URL'].rstrip('/')}/v2/accounts/"
              f"{os.environ['EXOTEL_ACCOUNT_SID']}/isv")
EXOTEL_AUTH = (os.environ["EXOTEL_API_KEY"], os.environ["EXOTEL_API_TOKEN"])


def acknowledge(ack: Ack) -> None:
    ack("Creating 1 onboarding link…")


def create_link(respond: Respond) -> None:
    answer = requests.post(EXOTEL_URL, auth=EXOTEL_AUTH, timeout=8)
    answer.raise_for_status()
    url = answer.json()["response"]["whatsapp"]["isv"]["data"]["onboarding_url"]
    respond(f"1 WhatsApp onboarding link: {url}")


bolt.command("/onboard-link")(ack=acknowledge, lazy=[create_link])
