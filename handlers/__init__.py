"""Slack listeners: parse, authorise, enqueue, ack. One module per command or surface; each
listener is a module-level function taking Bolt's arguments, its core from `context`."""

from __future__ import annotations

from slack_bolt import App

from handlers import actions, check_token, errors, home, onboard_link, shortcuts, unfurl, workflow


def register(app: App) -> None:
    onboard_link.register(app)
    check_token.register(app)
    actions.register(app)
    home.register(app)
    workflow.register(app)
    shortcuts.register(app)
    unfurl.register(app)
    errors.register(app)
