"""What the listeners are given: the core, built once per process by `bot.app`."""

from __future__ import annotations

from dataclasses import dataclass

from bot.core import Core


@dataclass
class Services:
    core: Core
