"""Every test here runs real `python -m bot` processes or kills real ones: all are slow."""

from __future__ import annotations

import pytest


def pytest_itemcollected(item: pytest.Item) -> None:
    item.add_marker(pytest.mark.slow)
