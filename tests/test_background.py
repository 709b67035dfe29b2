"""The hand-over to the work process: a burst's work waits until its acks are out."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bot.background import Background
from bot.core import Core
from bot.sandbox import ExotelSandbox
from tests.conftest import settings_for
from tests.fakes.slack import FakeSlack

LULL = 0.3  # long beside the gaps below, so a slow test machine can't fake a pause
GAP = 0.02  # between the commands of a burst


def started_at(core: Core, n: int) -> dict[str, str]:
    """A task (run in the work process): its reply says when it began there."""
    return {"text": f"{n} {time.monotonic()}"}


@pytest.fixture
def background(redis_url: str, exotel: ExotelSandbox, slack: FakeSlack,
               request: pytest.FixtureRequest) -> Iterator[Background]:
    work = Background(settings_for(redis_url, exotel, slack), threads=4, lull=LULL,
                      **request.param)
    yield work
    work.shutdown(wait=True)


def burst(background: Background, slack: FakeSlack, name: str, count: int) -> tuple[float, float]:
    """`count` tasks GAP apart, as a burst of commands hands them over; its first and last."""
    first = time.monotonic()
    for n in range(count):
        background.submit(slack.response_url(name), started_at, n)
        time.sleep(GAP)
    return first, time.monotonic() - GAP


def starts(slack: FakeSlack, name: str, count: int) -> list[float]:
    replies = slack.wait_for_replies(name, count, timeout=30)
    return sorted(float(reply["text"].split()[1]) for reply in replies)


@pytest.mark.parametrize("background", [{"max_wait": 30.0}], indirect=True)
def test_a_burst_is_handed_over_once_it_pauses(background: Background,
                                               slack: FakeSlack) -> None:
    _, last = burst(background, slack, "burst", 15)

    began = starts(slack, "burst", 15)

    assert began[0] >= last + LULL * 0.9  # none while the burst went on
    assert began[-1] < last + LULL + 5  # all of it soon after


@pytest.mark.parametrize("background", [{"max_wait": 0.4}], indirect=True)
def test_under_a_flood_with_no_pause_work_waits_at_most_max_wait(background: Background,
                                                                 slack: FakeSlack) -> None:
    first, last = burst(background, slack, "flood", 60)  # 1.2 s with no pause of LULL

    began = starts(slack, "flood", 60)

    assert first + 0.4 * 0.9 <= began[0] < last  # the first of it ran during the flood


@pytest.mark.parametrize("background", [{"max_wait": 30.0}], indirect=True)
def test_a_task_that_comes_after_the_last_hand_over_is_dropped_and_said_so(
    background: Background, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    background.shutdown(wait=True)

    background.submit(slack.response_url("late"), started_at, 1)

    assert not background._pending
    assert "a task handed over too late was dropped" in caplog.text
