"""The tests' fake Slack: the product's stand-in Slack (bot.playground.slack_api), which
records every Web API call and response URL reply, with the test app token and a way to
wait for replies."""

from __future__ import annotations

from typing import Any

from bot.playground.slack_api import JSON_PARAMS, ApiCall, SlackStandIn, Upload
from testkit.env import APP_TOKEN
from testkit.wait import wait_until

__all__ = ["JSON_PARAMS", "ApiCall", "FakeSlack", "Upload"]


class FakeSlack(SlackStandIn):
    def __init__(self, port: int = 0) -> None:
        super().__init__(port, app_token=APP_TOKEN)

    def wait_for_replies(self, name: str, count: int = 1,
                         timeout: float = 30) -> list[dict[str, Any]]:
        """Poll until `count` replies reached the response URL `name`, or fail at the deadline."""
        wait_until(lambda: len(self.replies(name)) >= count, timeout,
                   f"{count} replies to {name}")
        return self.replies(name)
