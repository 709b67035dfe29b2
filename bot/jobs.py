"""Old names of the bot's jobs, kept for jobs already in Redis.

RQ stores a job by the dotted name of its function. Jobs enqueued before the jobs moved to
`bot.runtime.jobs` (reminders are scheduled up to 24 h ahead, retries and ETAs minutes ahead)
still name `bot.jobs.<job>`; these names send them on. Nothing in the bot enqueues by these
names; delete this module two days after every deployment runs the new layout
(docs/decisions/0008-layer-packages.md).
"""
from bot.runtime.jobs import (
    check_token,
    fail_workflow_step,
    forget,
    issue_from_form,
    issue_links,
    on_failure,
    poll_statuses,
    refresh_home,
    refresh_usergroup,
    renew_batch,
    respond,
    run_workflow_step,
    send_in_thread,
    send_reminder,
    share_batch,
    stop_reminders,
    tell_privately,
    unfurl_links,
)

__all__ = [
    "check_token", "fail_workflow_step", "forget", "issue_from_form", "issue_links", "on_failure",
    "poll_statuses", "refresh_home", "refresh_usergroup", "renew_batch", "respond",
    "run_workflow_step", "send_in_thread", "send_reminder", "share_batch", "stop_reminders",
    "tell_privately", "unfurl_links",
]
