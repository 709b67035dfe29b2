"""`python -m bot track <link> --user U… [--note …] [--channel C…] [--team T…] [--issued-at T]`

Tracks an onboarding link that Exotel made while the bot's Redis did not answer (the
requester was shown it with this very command, and the worker logged it), or any link of
the account: as a one-link batch of that user's, exactly as an issued link is tracked
(status VALID, in their listings and App Home, polled, reminded before it expires, in
`--channel` or else by direct message). Its 24 hours run from `--issued-at` (ISO-8601;
naive times are UTC; default: now), and a link whose 24 hours are over is refused. A link
the bot tracks already is left as it is. No quota is charged: Exotel charged for the link
when it made it, and the daily quota limits what users ask Exotel for.

Input is checked as the bot checks Slack's: the link must end in a token (letters, digits,
- and _), the ids must have Slack's shapes, the note is cleaned as every note is.
Exit status: 0 tracked (or tracked already), 1 Redis did not answer, 2 bad input.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn, TextIO

from bot.domain.audit import parse_since
from bot.domain.models import Batch, Requester
from bot.domain.onboarding import AlreadyTracked, NotTrackable
from bot.domain.store import StoreUnavailable, now
from bot.exotel.client import SAFE_URL, OnboardingLink
from bot.exotel.tokens import TOKEN_RULE, is_token, mask, token_from_link
from bot.runtime.composition import build_core
from bot.settings import Settings
from bot.slack.inputs import CHANNEL_ID, TEAM_ID, USER_ID, UsageError, matches, note_of

PROG = "python -m bot track"


@dataclass(frozen=True)
class TrackRequest:
    """What the operator asked to track, checked."""

    link: OnboardingLink
    requester: Requester
    note: str
    issued_at: datetime | None  # None: now


class _Parser(argparse.ArgumentParser):
    """argparse, with its complaint as a UsageError (one line) instead of an exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse(argv: list[str]) -> TrackRequest:
    """The request in `argv`; UsageError (one line, saying what to give) if any is wrong."""
    parser = _Parser(prog=PROG, add_help=False)
    parser.add_argument("link")
    parser.add_argument("--user", required=True)
    parser.add_argument("--note", default="")
    parser.add_argument("--channel", default="")
    parser.add_argument("--team", default="")
    parser.add_argument("--issued-at", dest="issued_at")
    args = parser.parse_args(argv)
    requester = Requester(team_id=_id(TEAM_ID, args.team, "--team", "a team id, T…"),
                          user_id=_id(USER_ID, args.user, "--user", "a user id, U… or W…"),
                          channel_id=_id(CHANNEL_ID, args.channel, "--channel",
                                         "a channel id, C…, G… or D…"))
    return TrackRequest(link=_link(args.link), requester=requester, note=note_of(args.note),
                        issued_at=_moment(args.issued_at) if args.issued_at else None)


def _link(text: str) -> OnboardingLink:
    """A whole link, as Exotel returns them: the token alone does not say where it points,
    and listings show the link."""
    text = text.strip()
    token = token_from_link(text) if SAFE_URL.fullmatch(text) else None
    if token is not None:
        return OnboardingLink(url=text, token=token)
    if is_token(text):
        raise UsageError("give the whole link (https://…/TOKEN), not the token alone")
    raise UsageError(f"not an onboarding link: it must be https://… ending in a token "
                     f"({TOKEN_RULE})")


def _id(pattern: re.Pattern[str], value: str, option: str, shape: str) -> str:
    """`value` if empty or of Slack's shape for `option`."""
    if not value or matches(pattern, value):
        return value
    raise UsageError(f"{option} must be {shape} (capitals and digits); “{value[:30]}” is not")


def _moment(text: str) -> datetime:
    try:
        return parse_since(text)
    except ValueError:
        raise UsageError(f"--issued-at must be an ISO-8601 time such as "
                         f"2026-03-02T09:00:00+00:00; “{text[:40]}” is not") from None


def run(settings: Settings, argv: list[str], out: TextIO | None = None,
        err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        request = parse(argv)
    except UsageError as problem:
        print(f"{PROG}: {problem}", file=err)
        return 2
    token = mask(request.link.token)
    try:
        batch = build_core(settings).onboarding.track(
            request.requester, request.link, request.note, request.issued_at or now())
    except NotTrackable as why:
        print(f"{PROG}: {token} cannot be tracked: {why}", file=err)
        return 2
    except AlreadyTracked as known:
        link = known.link
        print(f"{token} is tracked already (batch {link.batch_id}, for "
              f"{link.requester.user_id}, expires {_utc(link.expires_at)}): nothing changed",
              file=out)
        return 0
    except StoreUnavailable:
        print(f"{PROG}: Redis is not answering (check REDIS_URL): {token} is not tracked; "
              "run this again once it answers", file=err)
        return 1
    print(_tracked(token, batch), file=out)
    return 0


def _tracked(token: str, batch: Batch) -> str:
    where = batch.requester.channel_id or "a direct message"
    due = f"reminder {_utc(batch.reminder_due)} in {where}" if batch.reminder_due else "no reminder"
    return (f"Tracked {token} for {batch.requester.user_id} as batch {batch.batch_id}: expires "
            f"{_utc(batch.expires_at)}, {due}")


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
