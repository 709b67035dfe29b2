"""Pure functions from the bot's data to Slack messages (Block Kit): replies to the commands and
buttons, reminders, posts. Built from `bot.slack.blocks`, which keeps them within Slack's
limits and user text inert."""

from __future__ import annotations

import json
import shlex
from datetime import datetime, timedelta

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    MarkdownTextObject,
    SectionBlock,
)

from bot.domain.history import FollowUp, RepSummary, Summary
from bot.domain.models import Batch, Requester, TrackedLink
from bot.domain.onboarding import (
    AlreadyForgotten,
    BatchGone,
    BudgetWait,
    CheckResult,
    Forgotten,
    IssueResult,
    NotYours,
)
from bot.domain.ratelimit import QuotaExceeded
from bot.domain.recording import UntrackedLink
from bot.domain.store import StoreUnavailable
from bot.exotel.client import ExotelError
from bot.exotel.tokens import mask
from bot.slack.blocks import (
    SECTION_LIMIT,
    Message,
    chunks,
    context,
    customer_blocks,
    ephemeral,
    escape,
    escape_note,
    fixed,
    note_block,
    outcome_counts,
    ref_mrkdwn,
    render,
    section,
    slack_date,
    text_message,
    time_left,
)
from bot.slack.command_text import UNREADABLE_BUTTON, again_value
from bot.slack.inputs import MAX_LINKS, MAX_NOTE, MAX_REF, UnreadablePayload

CUSTOMERS_PER_LINK = 5
LATE_NOTICE = timedelta(minutes=1)
RULES = (
    f"Each link works for 24 hours and can onboard up to {CUSTOMERS_PER_LINK} customers, so "
    "one link may go to several customers; the bot reminds this channel before it expires."
)
RENEW_ACTION = "renew_batch"
STOP_ACTION = "stop_reminders"
SHARE_ACTION = "share_batch"
FORGET_ACTION = "forget_batch"
RENEW_CUSTOMER_ACTION = "renew_customer"  # the digest's Renew: one new link for a customer
NEW_LINKS_ACTION = "new_onboarding_links"  # App Home's "New links": opens the form
NO_REVOKE = ("Exotel's API cannot revoke a link: it keeps working for whoever has it until it "
             "expires")
TRACK_COMMAND = "python -m bot track"  # bot.cli.track: the operator's way to track a link
# Batches in one listing, and how much of each note: with a button and a reminder date
# each, 20 lines of the longest notes stay inside Slack's ~13k characters of blocks.
MAX_LISTED = 20
LISTED_NOTE = 60
LISTED_REF = 60
# A report's summary: reps and customers to follow up shown, and how much of each note and
# reference (escaped, the longest fill under Slack's ~13k characters of blocks).
MAX_REPORT_REPS = 20
MAX_FOLLOW_UP = 20
REPORT_NOTE = 40
REPORT_REF = 40
FOLLOW_UP_TITLE = "*Follow up*: customers whose links expired unused"
# The digest's blocks (JSON), each customer's Renew button carrying its note and reference:
# well under the ~13k characters of blocks Slack takes.
DIGEST_MAX_CHARS = 11_000
REMINDER_STATUS = {
    "VALID": "still usable",
    "USED": ":white_check_mark: USED: a customer finished onboarding with it",
    "EXPIRED": "expired",
}
STATUS_TEXT = {
    "VALID": ":large_green_circle: *VALID*: the link can still be used.",
    "USED": ":white_check_mark: *USED*: the link has onboarded as many customers as it may.",
    "EXPIRED": ":red_circle: *EXPIRED*: the link is past its 24 hours. Issue a new one with "
    "`/onboard-link`.",
}


def _buttons(batch_id: str, *, renew: bool = False, share: bool = False) -> ActionsBlock:
    buttons = [ButtonElement(text="Stop reminding", action_id=STOP_ACTION, value=batch_id)]
    if share:
        buttons.insert(0, ButtonElement(text="Post to channel", action_id=SHARE_ACTION,
                                        value=batch_id))
    if renew:
        buttons.insert(0, ButtonElement(text="Renew", action_id=RENEW_ACTION, value=batch_id,
                                        style="primary"))
    return ActionsBlock(elements=buttons)


@fixed  # on every command's ack; count is 1 to 50
def working(count: int) -> Message:
    noun = "link" if count == 1 else "links"
    return text_message(f":hourglass_flowing_sand: Creating {count} onboarding {noun}…")


def budget_wait(count: int, per_minute: int, seconds: float) -> Message:
    noun = "link" if count == 1 else "links"
    return text_message(
        f":hourglass_flowing_sand: Exotel allows {per_minute} requests a minute for this "
        f"account, and the bot has used them all: your {count} {noun} in about "
        f"{max(1, round(seconds))} s.")


@fixed
def checking() -> Message:
    return text_message(":hourglass_flowing_sand: Asking Exotel about that token…")


def usage_problem(problem: str) -> Message:
    return text_message(f":warning: {escape(problem)}\nType `/onboard-link help` for usage.")


def check_usage_problem(problem: str) -> Message:
    return text_message(f":warning: {escape(problem)}")


@fixed
def onboard_help() -> Message:
    return text_message(
        "*`/onboard-link [count] [customer note] [ref:CRM reference]`* creates WhatsApp "
        "onboarding links from Exotel, just for you.\n"
        f"• `count`: how many links, a whole number from 1 to {MAX_LINKS} (default 1).\n"
        f"• `customer note`: who the links are for, up to {MAX_NOTE} characters.\n"
        f"• `ref:…`: the customer's record id in your CRM, or their email, up to {MAX_REF} "
        "characters, as one word anywhere in the text (not part of the note).\n"
        "Example: `/onboard-link 3 ACME Corp, Priya's team ref:hubspot-12345`\n"
        "`/onboard-link list` shows your live links (`list channel`: this channel's; "
        "`list all`: everyone's, for admins); `/onboard-link forget &lt;link&gt;` stops "
        "tracking one; `/onboard-link report [days]` sums up your links of the last days "
        "(default 7; admins: the team's), with a CSV of them in your DMs.\n"
        f"{RULES}\n"
        "Check a link later with `/check-token &lt;link or token&gt;`."
    )


@fixed
def check_help() -> Message:
    return text_message(
        "*`/check-token &lt;link or token&gt;`* asks Exotel whether an onboarding link "
        "still works.\n"
        "Paste the whole link or just the token at its end."
    )


def issued(result: IssueResult) -> Message:
    if not result.made:
        return _all_failed(result)
    count = result.made
    noun = "link" if count == 1 else "links"
    blocks: list[Block] = [section(f":link: *{count} WhatsApp onboarding {noun}* (only you see "
                                    "this message)")]
    blocks.extend(customer_blocks(result.note, result.customer_ref))
    lines = [f"{i}. {link.url}" for i, link in enumerate(result.links, 1)]
    blocks.extend(section(chunk) for chunk in chunks(lines))
    if result.untracked:
        blocks.extend(_untracked(result.untracked, first=len(result.links) + 1))
    if result.links:  # the rules promise a reminder; the untracked say when they expire
        blocks.append(context(f"Valid until {slack_date(result.links[0].expires_at)}. {RULES}"))
    if result.errors:
        blocks.append(section(_failure_summary(result)))
    if result.batch:
        blocks.append(context(
            f"Reminder in this channel {slack_date(result.reminder_due)}." if result.reminder_due
            else ":warning: No reminder: the bot's database did not answer when it was to be "
                 "scheduled."))
        blocks.append(_buttons(result.batch.batch_id, share=True))
    fallback = f"{count} WhatsApp onboarding {noun}"
    if result.note:
        fallback += f" for {escape_note(result.note[:100])}"
    if result.untracked:
        fallback += f" ({len(result.untracked)} not tracked by the bot)"
    return ephemeral(fallback, blocks)


def _untracked(links: list[UntrackedLink], first: int) -> list[Block]:
    """Links Redis would not take: shown all the same, with plainly what the bot will not do
    for them and the command with which its operator tracks them."""
    one = len(links) == 1
    which, they, them = ("This link is", "It works", "it") if one else (
        f"These {len(links)} links are", "They work", "them")
    warning = section(
        f":warning: *{which} not tracked by the bot*: its database did not answer when Exotel "
        f"made {them}. {they} all the same until {slack_date(links[0].expires_at)}, but the "
        f"bot will not remind you of {them}, list {them} or tell you when a customer finishes "
        f"with {them}.")
    lines = [f"{i}. {link.url}" for i, link in enumerate(links, first)]
    return [warning, *(section(chunk) for chunk in chunks(lines)), *_track_commands(links, them)]


def _track_commands(links: list[UntrackedLink], them: str) -> list[Block]:
    """The operator's command for each link, as many as fit one section; the rest said."""
    each = " (one command a link)" if len(links) > 1 else ""
    intro = f"To have {them} tracked, ask the bot's operator to run{each}:\n```"
    room = SECTION_LIMIT - len(intro) - len("```")
    commands: list[str] = []
    for command in map(track_command, links):
        if len(command) + 1 > room:
            break
        commands.append(command)
        room -= len(command) + 1
    if not commands:  # no link of a sane length gets here
        return [section(f"To have {them} tracked, ask the bot's operator to run "
                        f"`{TRACK_COMMAND}` with each link.")]
    blocks: list[Block] = [section(intro + "\n".join(commands) + "```")]
    if len(commands) < len(links):
        blocks.append(context(f"For the other {len(links) - len(commands)}: the same command "
                              "with each one's link in place of the last one above."))
    return blocks


def track_command(link: UntrackedLink) -> str:
    """`python -m bot track` for `link`, as mrkdwn: quoted for the shell, and the note made
    inert as everywhere (its formatting characters become lookalikes, kept in the note)."""
    who = link.requester
    parts = [TRACK_COMMAND, escape(shlex.quote(link.url)), "--user", who.user_id]
    if who.team_id:
        parts += ["--team", who.team_id]
    if who.channel_id:
        parts += ["--channel", who.channel_id]
    parts += ["--issued-at", link.issued_at.isoformat(timespec="seconds")]
    if link.note:
        # escape_note leaves entities and lookalikes, which Slack shows as the characters
        # they stand for, quoted; `=`: a note may start with "-".
        parts.append("--note=" + shlex.quote(escape_note(link.note)))
    return " ".join(parts)


def _failure_summary(result: IssueResult) -> str:
    reasons = "\n".join(f"• {escape(reason)}" + (f" (×{n})" if n > 1 else "")
                        for reason, n in result.reasons())
    return f":warning: *{result.failed} of {result.requested} links could not be created:*\n" + (
        reasons[: SECTION_LIMIT - 100])


def _all_failed(result: IssueResult) -> Message:
    noun = "link" if result.requested == 1 else "links"
    return text_message(
        f":x: No onboarding {noun} could be created, and nothing was issued.\n"
        + "\n".join(f"• {escape(reason)}" for reason, _ in result.reasons())[: SECTION_LIMIT - 100]
    )


def checked(result: CheckResult) -> Message:
    status = STATUS_TEXT.get(result.status, f"*{escape(result.status)}* (as Exotel says)")
    blocks: list[Block] = [section(f"Token `…{result.token[-4:]}`: {status}")]
    tracked = result.tracked
    if tracked is None:
        blocks.append(context("This link is not tracked by this bot: it was forgotten, or "
                               "this bot never issued it. The status above is Exotel's."))
    else:
        blocks.append(context(
            f"Issued by <@{tracked.requester.user_id}> on {slack_date(tracked.issued_at)}; "
            f"expires {slack_date(tracked.expires_at)} ({time_left(tracked.expires_at)})."
        ))
        if tracked.note:
            blocks.append(note_block(tracked.note))
    return ephemeral(f"Token status: {escape(result.status)}", blocks)


def problem(error: BaseException) -> Message:
    """What went wrong after the ack, in words for the channel; never internal details."""
    if isinstance(error, StoreUnavailable):
        return text_message(
            ":x: The bot's database (Redis) is not answering, so nothing was done and Exotel "
            "was not called. Please try again in a minute; if it persists, tell the bot's "
            "operator."
        )
    if isinstance(error, BudgetWait):
        minutes = max(1, round(error.seconds / 60))
        return text_message(
            f":hourglass: Exotel's request budget is booked for the next {minutes} min, longer "
            "than Slack lets the bot answer this command. Nothing was issued; please try again "
            f"in {minutes} min.")
    if isinstance(error, AlreadyForgotten):
        return text_message(":wastebasket: The bot had already forgotten those links; nothing "
                            "more to do.")
    if isinstance(error, BatchGone):
        # Not "expired": the bot cannot know that without asking Exotel (/check-token does).
        return text_message(
            ":information_source: Those links are not tracked by this bot any more (they were "
            "forgotten, or their 24 hours are over). `/check-token` asks Exotel about a link; "
            "`/onboard-link` creates new ones."
        )
    if isinstance(error, ExotelError):
        return text_message(f":x: {escape(str(error))}")
    if isinstance(error, UnreadablePayload):
        return text_message(":warning: Slack sent the bot a request without a user it could "
                            "act for, so nothing was done. Please try again.")
    if isinstance(error, NotYours):
        return text_message(":no_entry: Only the person who issued those links (or an admin) "
                            "can do that.")
    if isinstance(error, QuotaExceeded):
        return text_message(
            f":no_entry: You can issue at most {error.limit} links in any 24 hours, and you have "
            f"{error.remaining} left. More can be issued from {slack_date(error.more_at)}.")
    return text_message(
        ":x: Something went wrong inside the bot, and the request did not finish. Please try "
        "again; if it happens again, tell the bot's operator (the details are in its log)."
    )


def reminder(batch: Batch, statuses: dict[str, str], late_by: timedelta) -> Message:
    """The channel's reminder before a batch expires; tokens masked, links stay private.

    `statuses` holds what Exotel said of each token; a token missing from it is unknown.
    """
    count = len(batch.tokens)
    noun = "link" if count == 1 else "links"
    lines = [f"• `{mask(token)}`: "
             + (REMINDER_STATUS.get(statuses[token], escape(statuses[token]))
                if token in statuses else "status unknown (Exotel could not be reached)")
             for token in batch.tokens]
    blocks: list[Block] = [
        section(f":alarm_clock: <@{batch.requester.user_id}>, your {count} onboarding {noun} "
                 f"expire {slack_date(batch.expires_at)} ({time_left(batch.expires_at)})."),
    ]
    blocks.extend(customer_blocks(batch.note, batch.customer_ref))
    blocks.extend(section(chunk) for chunk in chunks(lines))
    if late_by > LATE_NOTICE:
        blocks.append(context(f"This reminder is {int(late_by.total_seconds() // 60)} min late: "
                               "the bot was offline when it was due."))
    blocks.append(_buttons(batch.batch_id, renew=True))
    fallback = f"Reminder: {count} onboarding {noun} expire soon"
    return {"text": fallback, "blocks": render(blocks)}


def stopped() -> Message:
    return text_message(":no_bell: No more reminders for those links.")


def renew_in_progress() -> Message:
    return text_message(":hourglass_flowing_sand: Already renewing those links; they are on "
                        "their way.")


def refused(reason: str, admins: list[str]) -> Message:
    ask = (" Ask " + " or ".join(f"<@{a}>" for a in admins[:5]) + " for access."
           if admins else " Ask the person who runs this bot for access.")
    return text_message(f":no_entry: {escape(reason)}{ask}")


def batch_line(batch: Batch, at: datetime) -> str:
    """A batch in a listing: its note and CRM reference, count, requester, time left and
    reminder."""
    note = (escape_note(_shorten(batch.note, LISTED_NOTE)) if batch.note
            else "_no customer note_")
    ref = (f" ({ref_mrkdwn(_shorten(batch.customer_ref, LISTED_REF))})" if batch.customer_ref
           else "")
    count = len(batch.tokens)
    reminder = (f"; reminder {slack_date(batch.reminder_due)}"
                if batch.reminder_due and batch.reminder_due > at else "")
    return (f"*{note}*{ref}: {count} link{'s' if count != 1 else ''} by "
            f"<@{batch.requester.user_id}>, {time_left(batch.expires_at, at)}{reminder}")


@fixed
def unreadable_request() -> Message:
    """A button that issues again whose value is no request (`command_text.parse_again`)."""
    return text_message(f":warning: {UNREADABLE_BUTTON[:-1]}, so nothing was issued. "
                        "`/onboard-link` issues links.")


@fixed
def preparing_report() -> Message:
    return text_message(":hourglass_flowing_sand: Preparing your report…")


def report(summary: Summary, days: int, team: bool, csv_note: str) -> Message:
    """`/onboard-link report`: per rep, links issued, turned USED, expired unused and the
    median time to USED; then the customers to follow up (links expired unused); then
    `csv_note`, what became of the CSV (mrkdwn the bot wrote)."""
    whose = "the whole team's links" if team else "your links"
    period = "day" if days == 1 else f"{days} days"
    if not summary.reps:
        text = f"No links issued in the last {period} ({whose})."
        return ephemeral(text, [section(f":bar_chart: {text}")])
    title = (f":bar_chart: *Onboarding report, last {period}* ({whose}): "
             f"{_links_issued(summary)}.")
    blocks: list[Block] = [section(title), *_rep_sections(summary, "see the CSV")]
    if summary.follow_up:
        lines = [FOLLOW_UP_TITLE]
        lines.extend(_follow_up_line(item) for item in summary.follow_up[:MAX_FOLLOW_UP])
        if len(summary.follow_up) > MAX_FOLLOW_UP:
            lines.append(f"…and {len(summary.follow_up) - MAX_FOLLOW_UP} more: see the CSV.")
        blocks.extend(section(c) for c in chunks(lines))
    blocks.append(context(csv_note))
    return ephemeral(f"Onboarding report, last {period}: {summary.issued} links issued.",
                     blocks)


def digest(summary: Summary, since: datetime, until: datetime) -> Message:
    """The managers' digest, posted in DIGEST_CHANNEL: the report's summary of the links
    issued from `since` to `until` (the whole team's), each customer to follow up with a
    Renew button that issues one new link for whoever clicks it. Within Slack's limits: at
    most MAX_REPORT_REPS reps and MAX_FOLLOW_UP customers, and customers only while the
    blocks stay under DIGEST_MAX_CHARS (each button carries its customer's note)."""
    title = (f":bar_chart: *Onboarding digest* from {slack_date(since)} to "
             f"{slack_date(until)}: {_links_issued(summary)}.")
    more = "admins see them all with `/onboard-link report`"
    blocks: list[Block] = [section(title), *_rep_sections(summary, more)]
    size = sum(len(json.dumps(block.to_dict())) for block in blocks)
    if summary.follow_up:
        blocks.append(section(FOLLOW_UP_TITLE + ". *Renew* issues one new link for you."))
        shown = 0
        for item in summary.follow_up[:MAX_FOLLOW_UP]:
            block = _renewable(item)
            size += len(json.dumps(block.to_dict()))
            if size > DIGEST_MAX_CHARS:
                break
            blocks.append(block)
            shown += 1
        if shown < len(summary.follow_up):
            blocks.append(context(f"…and {len(summary.follow_up) - shown} more customers to "
                                  f"follow up: {more}."))
    blocks.append(context("Links issued in the period, as they stood at its end. " + RULES))
    return {"text": f"Onboarding digest: {summary.issued} links issued, "
                    f"{len(summary.follow_up)} customers to follow up",
            "blocks": render(blocks)}


def _renewable(item: FollowUp) -> SectionBlock:
    """A customer to follow up, with its Renew button (none if its value would not fit)."""
    try:
        value = again_value(1, item.note, item.ref)
    except ValueError:
        return section(_follow_up_line(item))
    return SectionBlock(text=MarkdownTextObject(text=_follow_up_line(item)),
                        accessory=ButtonElement(text="Renew", action_id=RENEW_CUSTOMER_ACTION,
                                                value=value))


def _links_issued(summary: Summary) -> str:
    return f"{summary.issued} link{'s' if summary.issued != 1 else ''} issued"


def _rep_sections(summary: Summary, more: str) -> list[Block]:
    """Each rep's counts, at most MAX_REPORT_REPS of them; `more`: where the rest are."""
    lines = [_rep_line(rep) for rep in summary.reps[:MAX_REPORT_REPS]]
    if len(summary.reps) > MAX_REPORT_REPS:
        lines.append(f"…and {len(summary.reps) - MAX_REPORT_REPS} more reps: {more}.")
    return [section(c) for c in chunks(lines)]


def _follow_up_line(item: FollowUp) -> str:
    note = escape_note(_shorten(item.note, REPORT_NOTE)) if item.note else "_no customer note_"
    ref = f" ({ref_mrkdwn(_shorten(item.ref, REPORT_REF))})" if item.ref else ""
    return f"• {note}{ref}, <@{item.rep}>"


def _rep_line(rep: RepSummary) -> str:
    return (f"• <@{rep.rep}>: "
            f"{outcome_counts(rep.issued, rep.used, rep.expired, rep.median_to_used)}")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def forgotten(result: Forgotten) -> Message:
    what = (f"the link ending `{mask(result.token)}`" if result.token
            else f"those {len(result.batch.tokens)} links")
    return text_message(f":wastebasket: The bot no longer tracks {what} and won't remind about "
                        f"them. {NO_REVOKE} {slack_date(result.batch.expires_at)}.")


def shared(batch: Batch, links: list[TrackedLink], sharer: Requester) -> Message:
    """The links posted to the channel, attributed to the one who issued them."""
    count = len(links)
    blocks: list[Block] = [section(f":link: <@{sharer.user_id}> shared {count} WhatsApp "
                                    f"onboarding link{'s' if count != 1 else ''}:")]
    blocks.extend(customer_blocks(batch.note, batch.customer_ref))
    blocks.extend(section(chunk) for chunk in
                  chunks(f"{i}. {link.url}" for i, link in enumerate(links, 1)))
    blocks.append(context(f"Valid until {slack_date(batch.expires_at)}. {RULES}"))
    return {"text": f"{count} onboarding links shared", "blocks": render(blocks)}


def posted_to_channel() -> Message:
    return text_message(":white_check_mark: Posted the links to the channel.")


def cannot_post_here(error: str) -> Message:
    return text_message(f":warning: Slack would not let the bot post in this channel "
                        f"(`{escape(error)}`). Invite the bot with `/invite @onboard-bot`, or "
                        "copy the links yourself.")


