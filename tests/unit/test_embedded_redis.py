"""Where the embedded Redis puts its socket (no server started)."""

from __future__ import annotations

import os
from pathlib import Path

from bot.runtime import embedded_redis


def test_a_data_dir_with_a_long_path_gets_its_socket_elsewhere(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d" * 40] * 3)
    path = embedded_redis.socket_path(deep)
    assert len(str(path)) <= embedded_redis.MAX_SOCKET_PATH
    assert path == embedded_redis.socket_path(deep)  # the same for every process
    assert os.path.dirname(path) != str(deep)
