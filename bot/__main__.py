"""Entry points.

    python -m bot           the whole bot from one command: web (or Socket Mode) and the workers
    python -m bot web       the HTTP process only (the Procfile's `web`)
    python -m bot worker    the workers only (the Procfile's `worker`): commands and reminders
    python -m bot doctor    check Slack, Exotel, Redis and the workers; exit 1 if any fails
    python -m bot sandbox   a stand-in Exotel on 127.0.0.1 (--port, default 4010)
    python -m bot try       the bot in a browser, no settings: a stand-in Slack and Exotel
                        (--port, default 3000)
    python -m bot audit [--since DATE] [--format csv|jsonl]   print the audit trail
    python -m bot jobs      the bot's job queues and workers, in its own Redis
    python -m bot track <link> --user U… [--note …] [--channel C…] [--team T…]
                        [--issued-at ISO-8601]   track a link the bot could not record
    python -m bot webhooks [test | enable URL]   the webhook receivers: deliveries, a test
                        event to each, or deliveries again to a URL that answered 410
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import signal
import sys
import time
from datetime import datetime

from bot.runtime import embedded_redis, multiproc
from bot.settings import Settings, SettingsError, load_settings
from bot.telemetry import logs

log = logging.getLogger("bot")
WORKER_STOP_SECONDS = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("process", nargs="?", default="all",
                        choices=["all", "web", "worker", "doctor", "sandbox", "audit", "jobs",
                                 "track", "webhooks", "try"])
    parser.add_argument("--since", type=_date, help="audit: entries from this date (2026-11-01)")
    parser.add_argument("--format", choices=["csv", "jsonl"], default="csv",
                        help="audit: output format (default csv)")
    args, rest = parser.parse_known_args(argv)
    if args.process == "sandbox":
        # Before the settings: the sandbox needs no Slack settings, and takes its own options.
        from bot.exotel import sandbox

        return sandbox.main(rest)
    if args.process == "try":  # needs no settings, and ignores the ones there are
        from bot.playground import run

        return run.main(rest)
    if rest and args.process not in ("track", "webhooks"):  # these take their own arguments
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        settings = load_settings()
    except SettingsError as problem:
        print(problem, file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.secrets(), settings.log_format)
    if args.process == "doctor":
        # Before _with_redis: the doctor looks at what is configured, it starts nothing.
        from bot.cli import doctor

        return doctor.run_doctor(settings)
    settings = _with_redis(settings)

    if args.process == "audit":
        from bot.cli import audit_export

        return audit_export.run(settings, args.since, args.format)
    if args.process == "jobs":
        from bot.cli import jobs_report

        return jobs_report.run(settings)
    if args.process == "track":
        from bot.cli import track

        return track.run(settings, rest)
    if args.process == "webhooks":
        from bot.cli import webhooks

        return webhooks.run(settings, rest)
    if not _wait_until_reachable(settings, slack=args.process != "worker"):
        return 2
    multiproc.use_multiprocess_dir()  # before anything imports prometheus_client
    if args.process == "worker":
        from bot.runtime import worker

        worker.run(settings)
        return 0
    from bot.runtime import server  # after settings: importing Bolt is slow, errors should be quick

    if args.process == "all":
        _fork_worker_beside(settings)

    if settings.socket_mode and args.process == "all":
        # Exit through atexit on SIGTERM, so the worker beside stops too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        server.serve_socket_mode(settings)
    else:
        server.serve_http(settings)
    return 0


def _date(text: str) -> datetime:
    from bot.domain.audit import parse_since

    try:
        return parse_since(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use 2026-11-01)") from None


def _wait_until_reachable(settings: Settings, *, slack: bool) -> bool:
    """Wait for Redis (and Slack, for what serves it); False on what no wait can mend."""
    from bot.runtime import startup

    assert settings.redis_url is not None
    try:
        startup.wait_for_redis(settings.redis_url, tls_verify=settings.redis_tls_verify)
        if slack:
            startup.wait_for_slack(settings)
    except startup.StartupError as problem:
        print(problem, file=sys.stderr)
        return False
    return True


def _with_redis(settings: Settings) -> Settings:
    """Start the embedded Redis when none is configured, and tell child processes about it."""
    if settings.redis_url:
        return settings
    url = embedded_redis.start(settings.data_dir)
    os.environ["REDIS_URL"] = url
    return settings.model_copy(update={"redis_url": url})


def _fork_worker_beside(settings: Settings) -> None:
    """The workers as a forked child process, stopped when this one exits, however it exits.

    Forked, not started afresh: it shares with this process (and the web processes it forks)
    the pages of every module both have imported, frozen out of the collector's reach."""
    import gc

    from bot.runtime import worker  # with all its jobs need: imported once, shared by the forks
    from bot.runtime.lifetime import die_with_parent

    gc.freeze()
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        code = 0
        try:
            die_with_parent(signal.SIGTERM, parent)
            worker.run(settings)
        except BaseException:
            log.exception("the workers stopped on an error")
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)

    def stop() -> None:
        if os.getpid() != parent:  # not in gunicorn's forks
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_SECONDS
        while time.monotonic() < deadline:
            try:
                if os.waitpid(child, os.WNOHANG)[0]:
                    return
            except ChildProcessError:  # already reaped (gunicorn's arbiter reaps any child)
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)

    atexit.register(stop)


if __name__ == "__main__":
    sys.exit(main())
