"""What the listeners are given: the core, built once per process by `bot.slack.app`."""

from __future__ import annotations

from dataclasses import dataclass

from bot.slack.core import Core


@dataclass
class Services:
    core: Core
