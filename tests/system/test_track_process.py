"""`python -m bot track` as an operator runs it: a real process on the suite's Redis."""

from __future__ import annotations

import os
import subprocess
import sys

import redis

from bot.domain.store import BATCH_KEY, TOKEN_KEY
from bot.exotel.sandbox import LINK_BASE, ExotelSandbox
from testkit.env import ROOT, bot_env
from testkit.slack import FakeSlack

TOKEN = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def test_python_m_bot_track_tracks_a_link_once_and_refuses_bad_input(
    redis_url: str, redis_client: redis.Redis, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    env = {"PATH": os.environ["PATH"], **bot_env(exotel, slack, REDIS_URL=redis_url)}

    def track(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", "track", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    done = track(LINK_BASE + TOKEN, "--user", "U0REP", "--team", "T0FAKE",
                 "--note=-ACME & co")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Tracked …e1f0 for U0REP as batch ")
    assert "a direct message" in done.stdout  # no --channel: the reminder comes as a DM
    link = redis_client.get(TOKEN_KEY.format(TOKEN))
    assert link is not None and '"note":"-ACME & co"' in link
    batch_id = done.stdout.split(" as batch ")[1].split(":")[0]
    assert redis_client.exists(BATCH_KEY.format(batch_id))

    again = track(LINK_BASE + TOKEN, "--user", "U0REP")
    assert again.returncode == 0 and "is tracked already" in again.stdout

    bad = track(LINK_BASE + TOKEN, "--user", "nobody")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [
        "python -m bot track: --user must be a user id, U… or W… (capitals and digits); "
        "“nobody” is not"]
    assert TOKEN not in done.stdout + done.stderr + again.stdout + again.stderr
