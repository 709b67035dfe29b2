"""Timed signed commands for the ack-latency figures (run in a client process of its own)."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from testkit.signed import command_body, sign


def timed_commands(url: str, response_url: str, count: int, concurrency: int,
                   text: str = "1 load test", rate: float | None = None) -> list[float]:
    """Send `count` signed /onboard-link commands (`text`, then the command's number: one
    customer each), `concurrency` at a time over keep-alive
    connections, and return each one's acknowledgement time in seconds, sorted. With
    `rate`, the n-th command waits until n / rate seconds after the first (if a connection
    is free by then): a steady load instead of as fast as the server answers.

    One asyncio loop drives every connection, so the client's own threads don't compete
    for the GIL and inflate what is measured."""
    parts = urlsplit(url)
    todo = iter(range(count))
    latencies: list[float] = []
    begun = time.perf_counter()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        for n in todo:
            if rate:
                await asyncio.sleep(max(0.0, begun + n / rate - time.perf_counter()))
            # Each for a customer of its own: the same customer again would be answered in
            # the ack from its live links, and nothing enqueued.
            body = command_body("/onboard-link", f"{text} {n}", response_url).encode()
            headers = "".join(f"{k}: {v}\r\n" for k, v in sign(body.decode()).items())
            request = (f"POST /slack/events HTTP/1.1\r\nHost: {parts.netloc}\r\n{headers}"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            started = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            assert status.split()[1] == b"200", status
        writer.close()

    async def run() -> None:
        await asyncio.gather(*(connection() for _ in range(concurrency)))

    asyncio.run(run())
    return sorted(latencies)


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]
