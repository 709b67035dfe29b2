"""The ASGI front's whole-body guard, in process: one request at a time, no socket."""

from __future__ import annotations


def _asgi(app, headers: list[tuple[bytes, bytes]], messages: list[dict]) -> list[dict]:
    """Run one request through an ASGI app; `messages` are what the client sends, then the
    connection hangs (no disconnect), as a slow client's does."""
    import asyncio

    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/slack/events", "headers": headers,
             "query_string": b"", "http_version": "1.1", "root_path": "", "scheme": "http",
             "server": ("127.0.0.1", 3000), "client": ("127.0.0.1", 5000)}
    asyncio.run(app(scope, receive, send))
    return sent



def _echo_wsgi(environ: dict, start_response) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"got ", str(len(body)).encode()]



def test_whole_body_refuses_before_the_application_sees_anything() -> None:
    from bot.runtime.server import ThreadedWSGI, WholeBody

    app = WholeBody(ThreadedWSGI(_echo_wsgi, 2), limit=100, deadline=0.2)
    part = {"type": "http.request", "body": b"x" * 60, "more_body": True}
    last = {"type": "http.request", "body": b"y" * 30, "more_body": False}
    assert _asgi(app, [(b"content-length", b"101")], [])[0]["status"] == 413
    assert _asgi(app, [(b"content-length", b"1e3")], [])[0]["status"] == 400
    assert _asgi(app, [], [dict(part), dict(part)])[0]["status"] == 413  # chunked, over
    assert _asgi(app, [], [dict(part)])[0]["status"] == 408  # the rest never comes
    assert _asgi(app, [], [{"type": "http.disconnect"}]) == []
    whole = _asgi(app, [], [dict(part), dict(last)])
    assert whole[0]["status"] == 200 and whole[1]["body"] == b"got 90"
    assert (b"content-type", b"text/plain") in whole[0]["headers"]
