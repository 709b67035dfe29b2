"""`python -m bot sandbox` as an operator runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from bot.exotel.client import ExotelClient
from bot.exotel.sandbox import CONTROL_PREFIX, LINK_BASE
from testkit.env import EXOTEL_KEY, EXOTEL_SID, EXOTEL_TOKEN, ROOT
from testkit.processes import free_port
from testkit.wait import wait_until
from tests.support import NoLimit, isv, mark


class SandboxProcess:
    def __init__(self, port: int, **env: str) -> None:
        self.port = port
        self.out = Path(tempfile.mkdtemp(prefix="onboard-sandbox-")) / "out.log"
        full = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.out.parent),
                "PYTHONUNBUFFERED": "1", **env}
        with self.out.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "sandbox", "--port", str(port)], cwd=ROOT,
                env=full, stdout=log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.out.read_text()

    def wait_listening(self, timeout: float = 20) -> None:
        try:
            wait_until(self._listening, timeout, "the sandbox listens")
        except AssertionError as failed:
            raise AssertionError(f"{failed}:\n{self.output()}") from None

    def _listening(self) -> bool:
        assert self.proc.poll() is None, f"sandbox exited:\n{self.output()}"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(10)



def test_python_m_bot_sandbox_serves_with_defaults_and_says_how_to_use_it() -> None:
    sandbox = SandboxProcess(free_port())  # no Slack or Exotel settings at all
    try:
        sandbox.wait_listening()
        created = requests.post(f"{sandbox.url}/v2/accounts/sandbox/isv",
                                auth=("sandbox-key", "sandbox-token"), timeout=5)
        assert created.status_code == 200
        token = isv(created)["data"]["onboarding_url"].removeprefix(LINK_BASE)
        assert mark(sandbox.url, token, 5).json()["status"] == "USED"
    finally:
        assert sandbox.stop() == 0  # SIGTERM stops it cleanly
    output = sandbox.output()
    for line in (f"EXOTEL_BASE_URL={sandbox.url}", "EXOTEL_API_KEY=sandbox-key",
                 "EXOTEL_API_TOKEN=sandbox-token", "EXOTEL_ACCOUNT_SID=sandbox",
                 f"curl -X POST '{sandbox.url}{CONTROL_PREFIX}<token>/onboard?customers=5'"):
        assert line in output



def test_python_m_bot_sandbox_takes_credentials_from_the_environment() -> None:
    sandbox = SandboxProcess(free_port(), EXOTEL_API_KEY=EXOTEL_KEY,
                             EXOTEL_API_TOKEN=EXOTEL_TOKEN, EXOTEL_ACCOUNT_SID=EXOTEL_SID)
    try:
        sandbox.wait_listening()
        # The bot's own client, pointed at it as the printed instructions say.
        client = ExotelClient(base_url=sandbox.url, account_sid=EXOTEL_SID,
                              api_key=EXOTEL_KEY, api_token=EXOTEL_TOKEN, limiter=NoLimit())
        link = client.create_link()
        assert client.token_status(link.token) == "VALID"
        assert mark(sandbox.url, link.token, 5).status_code == 200
        assert client.token_status(link.token) == "USED"
        defaults = requests.post(f"{sandbox.url}/v2/accounts/{EXOTEL_SID}/isv",
                                 auth=("sandbox-key", "sandbox-token"), timeout=5)
        assert defaults.status_code == 401
        # A second sandbox on the same port says what to do instead of a traceback.
        clash = subprocess.run([sys.executable, "-m", "bot", "sandbox", "--port",
                                str(sandbox.port)], cwd=ROOT, capture_output=True, text=True,
                               timeout=30)
        assert clash.returncode == 1
        assert "pick another port with --port" in clash.stderr
        assert "Traceback" not in clash.stderr
    finally:
        sandbox.stop()
    output = sandbox.output()
    assert "EXOTEL_API_TOKEN=(as set in this environment)" in output
    assert EXOTEL_TOKEN not in output
    assert f"EXOTEL_API_KEY={EXOTEL_KEY}" in output
