"""Serving the bot: gunicorn with uvicorn workers for HTTP mode, Bolt's Socket Mode otherwise.

Each request is read whole on uvicorn's event loop, within a size limit and a deadline, before
a thread runs the bot's WSGI application on it (through a2wsgi): a slow or huge request holds
a cheap connection, never one of the threads that answer Slack (docs/decisions/0006-web-front.md).
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from a2wsgi.wsgi import build_environ
from gunicorn.app.base import BaseApplication
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from bot.runtime.app import create_app
from bot.runtime.composition import build_core
from bot.runtime.lifetime import die_with_parent
from bot.runtime.web import MAX_BODY, create_wsgi
from bot.settings import Settings, load_settings
from bot.telemetry import logs

log = logging.getLogger(__name__)

# Slack sends a request's few kB at once; a body still arriving after this is cut off (408).
BODY_DEADLINE = 10.0
# A request line and headers longer than this are refused (Slack's are about 2 kB).
MAX_HEAD = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WholeBody:
    """ASGI middleware: the body read in full, at most `limit` bytes within `deadline`
    seconds, before the application is called; 413 past the limit (by Content-Length before
    reading, or as a chunked body crosses it), 408 past the deadline."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY,
                 deadline: float = BODY_DEADLINE) -> None:
        self.app, self.limit, self.deadline = app, limit, deadline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit():
            return await _refuse(send, 400, b"bad request\n")
        if int(length) > self.limit:
            return await _refuse(send, 413, b"request too large\n")
        try:
            async with asyncio.timeout(self.deadline):
                body = await self._read(receive)
        except TimeoutError:
            return await _refuse(send, 408, b"request timeout\n")
        except _ClientGone:
            return None  # nobody to answer
        if body is None:
            return await _refuse(send, 413, b"request too large\n")
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


class _ClientGone(Exception):
    """The client closed its connection before its request was whole."""


def _replay(body: bytes, receive: Receive) -> Receive:
    given = False

    async def replayed() -> Message:
        nonlocal given
        if given:
            return await receive()  # only a disconnect can come now
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _refuse(send: Send, status: int, text: bytes) -> None:
    # Connection: close, as the rest of the request is never read.
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(text)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": text})


class ThreadedWSGI:
    """ASGI to WSGI for requests whose body WholeBody has read: the application runs on a
    thread with the body in memory, and its whole answer comes back to the event loop in one
    hand-over. (a2wsgi's WSGIMiddleware streams both ways, a hand-over for each message: under
    a burst of acks that doubled their median latency; see the decision record.)"""

    def __init__(self, app: WSGIApp, threads: int) -> None:
        self.app = app
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="web")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        # a2wsgi's environ is a TypedDict; the bot's WSGI side reads it as a plain dict.
        environ: dict[str, Any] = build_environ(  # type: ignore[assignment]
            scope, io.BytesIO(message.get("body", b"")))  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        status, headers, body = await loop.run_in_executor(self.executor, self._run, environ)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _run(self, environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: object = None) -> Callable[[bytes], None]:
            started[:] = [(status, headers)]
            return _no_write

        chunks = self.app(environ, start_response)
        try:
            body = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        status, headers = started[0]
        return (int(status.split(" ", 1)[0]),
                [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers], body)


def _no_write(data: bytes) -> None:
    raise NotImplementedError("the bot's WSGI application returns its body")




def asgi_application() -> ASGIApp:
    """Build the whole bot from the environment; each gunicorn worker calls this once."""
    settings = load_settings()
    core = build_core(settings)
    wsgi = create_wsgi(create_app(core), core)
    # Bolt's listeners are synchronous: they run on these threads, one request each.
    return WholeBody(ThreadedWSGI(wsgi, settings.web_threads))


class BoundedHead(HttpToolsProtocol):
    """uvicorn's httptools protocol with a limit on a request's line and headers.

    httptools buffers a head of any size (a 200 MB header was taken whole); h11 has a limit
    but parses in Python, at twice the ack latency under load (the decision record). A head
    still incomplete past MAX_HEAD is answered 400 and its connection closed. The chunk in
    which a request begins is not counted, so the bound is MAX_HEAD plus one read (256 kB)."""

    _in_head = True
    _head_bytes = 0
    _began = False

    def data_received(self, data: bytes) -> None:
        self._began = False
        super().data_received(data)
        if self._in_head and not self._began and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self.logger.warning("request headers over %d bytes refused", MAX_HEAD)
                self.send_400_response("Request headers too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._began = True, 0, True

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()


class Worker(UvicornWorker):
    """uvicorn in a gunicorn worker: HTTP parsed by httptools (heads bounded), no lifespan,
    no access log."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "asyncio", "http": BoundedHead, "lifespan": "off", "access_log": False,
        "server_header": False}

    def init_process(self) -> None:
        # uvicorn's worker, unlike gunicorn's own, never checks that its arbiter still lives:
        # an arbiter killed outright would leave it serving.
        die_with_parent(signal.SIGTERM, self.ppid)
        super().init_process()

    def init_signals(self) -> None:
        super().init_signals()
        # uvicorn raises SIGTERM again once it has stopped serving; exiting then, rather than
        # dying of it, lets the process end as a normal exit.
        for stop in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop, _exit)


def _exit(signum: int, frame: object) -> None:
    sys.exit(0)


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "bind": f"{settings.web_host}:{settings.port}",
        "worker_class": "bot.runtime.server.Worker",
        # Each worker runs its own ack threads.
        "workers": settings.web_concurrency,
        "timeout": 30,
        "graceful_timeout": 20,  # platforms give 30 s after SIGTERM
        "keepalive": 5,
        "accesslog": None,
        # gunicorn's and uvicorn's start and stop lines only at DEBUG; warnings always.
        "loglevel": logs.library_level(settings.log_level).lower(),
        # Otherwise gunicorn opens a control socket in $HOME, shared by every bot of the user.
        "control_socket_disable": True,
    }


class _Gunicorn(BaseApplication):
    """gunicorn serving the bot's ASGI application, or what `loader` builds in each worker
    (the benchmark's comparison apps, served exactly as the bot is)."""

    def __init__(self, options: dict[str, Any],
                 loader: Callable[[], ASGIApp] | None = None) -> None:
        self._options = options
        self._loader = loader or asgi_application
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> ASGIApp:
        return self._loader()


def serve_http(settings: Settings) -> None:
    log.info("serving Slack events on http://%s:%d/slack/events", settings.web_host, settings.port)
    gc.freeze()  # what is imported by now is shared with the forks; see bot.runtime.worker
    _Gunicorn(gunicorn_options(settings)).run()


def serve_socket_mode(settings: Settings) -> None:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    app = create_app(build_core(settings))
    assert settings.slack_app_token is not None
    log.info("connecting to Slack in Socket Mode")
    SocketModeHandler(app, settings.slack_app_token.get_secret_value()).start()
