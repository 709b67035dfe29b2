"""Slack listeners: parse, call the core, render, reply. One module per command or action."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slack_bolt import App

from handlers import actions, check_token, errors, home, onboard_link, shortcuts, unfurl, workflow

if TYPE_CHECKING:
    from bot.slack.services import Services


def register_listeners(app: App, services: Services) -> None:
    onboard_link.register(app, services)
    check_token.register(app, services)
    actions.register(app, services)
    home.register(app, services)
    workflow.register(app, services)
    shortcuts.register(app, services)
    unfurl.register(app, services)
    errors.register(app)
