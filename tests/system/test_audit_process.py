"""`python -m bot audit` as an operator runs it, on the trail the bot in process left."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

from bot.exotel.sandbox import ExotelSandbox
from testkit.env import ROOT, bot_env
from testkit.slack import FakeSlack
from tests.blockkit import LINK, block_text
from tests.support import Bot


def test_python_m_bot_audit_prints_the_trail(
    bot: Bot, redis_url: str, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    tokens = LINK.findall(block_text(bot.command("/onboard-link", "2 ACME").final()))
    bot.command("/check-token", tokens[0]).final()
    env = {"PATH": os.environ["PATH"], **bot_env(exotel, slack, REDIS_URL=redis_url)}

    def audit(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "bot", "audit", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    rows = list(csv.DictReader(io.StringIO(audit("--format", "csv"))))
    assert [r["action"] for r in rows] == ["issue", "check"]
    assert rows[0]["user_id"] == "U0REP" and rows[0]["count"] == "2"
    lines = audit("--format", "jsonl", "--since", "2000-01-01").splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["issue", "check"]
    assert audit("--since", "2999-01-01").splitlines() == [",".join(
        ["at", "action", "outcome", "team_id", "user_id", "channel_id", "batch_id", "count",
         "tokens", "detail", "customer_ref"])]
    assert not any(t in audit() for t in tokens)
