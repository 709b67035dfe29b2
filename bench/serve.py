"""A benchmark app served exactly as `python -m bot web` serves the bot:
`python -m bench.serve bare|lazy`.

The same gunicorn options (`gunicorn_options`: WEB_CONCURRENCY workers, PORT, timeouts),
worker class (`bot.server.Worker`: uvicorn, httptools with bounded heads) and ASGI wrapper
(`WholeBody(ThreadedWSGI(wsgi, WEB_THREADS))`); only the Bolt app differs. Reads the bot's
settings from the environment, as the bot does.
"""

from __future__ import annotations

import argparse
import importlib

from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.runtime.server import ASGIApp, ThreadedWSGI, WholeBody, _Gunicorn, gunicorn_options
from bot.settings import load_settings

APPS = {"bare": "bench.bare_app", "lazy": "bench.lazy_app"}


def loader(name: str) -> ASGIApp:
    """Build the app in each gunicorn worker, as `asgi_application` builds the bot."""
    bolt = importlib.import_module(APPS[name]).bolt
    return WholeBody(ThreadedWSGI(SlackRequestHandler(bolt), load_settings().web_threads))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__)
    parser.add_argument("app", choices=sorted(APPS))
    name = parser.parse_args(argv).app
    _Gunicorn(gunicorn_options(load_settings()), lambda: loader(name)).run()


if __name__ == "__main__":
    main()
