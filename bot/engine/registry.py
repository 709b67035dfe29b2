"""Every job the bot runs, by the dotted name RQ stores, and the queues they go on.

Listeners, the Slack layer and the composition root name jobs from here (the domain's
reminders are handed their job's name) and never import the job functions (they sit in
`bot.runtime.jobs`, above them). The names are stored in Redis with
each job, so a job's name outlives a release: keep them when code moves.
tests/unit/test_registry.py checks that each resolves to a function and that no other
module names a job by a string of its own.
"""

from __future__ import annotations

from enum import StrEnum

JOBS_MODULE = "bot.runtime.jobs"


class Job(StrEnum):
    # Commands, buttons and the other surfaces (queue onboard-commands).
    ISSUE_LINKS = f"{JOBS_MODULE}.issue_links"
    RENEW_BATCH = f"{JOBS_MODULE}.renew_batch"
    CHECK_TOKEN = f"{JOBS_MODULE}.check_token"
    STOP_REMINDERS = f"{JOBS_MODULE}.stop_reminders"
    FORGET = f"{JOBS_MODULE}.forget"
    SHARE_BATCH = f"{JOBS_MODULE}.share_batch"
    REFRESH_HOME = f"{JOBS_MODULE}.refresh_home"
    REFRESH_USERGROUP = f"{JOBS_MODULE}.refresh_usergroup"
    RESPOND = f"{JOBS_MODULE}.respond"
    RUN_WORKFLOW_STEP = f"{JOBS_MODULE}.run_workflow_step"
    FAIL_WORKFLOW_STEP = f"{JOBS_MODULE}.fail_workflow_step"
    ISSUE_FROM_FORM = f"{JOBS_MODULE}.issue_from_form"
    SEND_IN_THREAD = f"{JOBS_MODULE}.send_in_thread"
    UNFURL_LINKS = f"{JOBS_MODULE}.unfurl_links"
    TELL_PRIVATELY = f"{JOBS_MODULE}.tell_privately"
    SEND_REPORT = f"{JOBS_MODULE}.send_report"
    # Scheduled: reminders (onboard-reminders) and the status poll chain (onboard-status).
    SEND_REMINDER = f"{JOBS_MODULE}.send_reminder"
    POLL_STATUSES = f"{JOBS_MODULE}.poll_statuses"
    # The managers' digest (onboard-reminders), one per DIGEST_CRON tick.
    SEND_DIGEST = f"{JOBS_MODULE}.send_digest"
    # Webhook deliveries (onboard-webhooks), one per event and receiver.
    DELIVER_WEBHOOK = f"{JOBS_MODULE}.deliver_webhook"

    @property
    def short_name(self) -> str:
        """The function's own name: job ids, descriptions, log lines and metrics use it."""
        return self.value.rsplit(".", 1)[-1]


# RQ calls this when a command job fails for good (stored with each job, like its name).
ON_FAILURE = f"{JOBS_MODULE}.on_failure"

COMMANDS_QUEUE = "onboard-commands"
REMINDERS_QUEUE = "onboard-reminders"
STATUS_QUEUE = "onboard-status"
# In the order workers take from them: commands first, status polls last.
QUEUES = (COMMANDS_QUEUE, REMINDERS_QUEUE, STATUS_QUEUE)
# Webhook deliveries: a queue of their own, staffed (one worker) only while WEBHOOK_URLS
# is set, so a slow receiver never holds up anything else.
WEBHOOKS_QUEUE = "onboard-webhooks"


def queue_names(webhooks: bool) -> tuple[str, ...]:
    """The bot's queues in the order workers take from them: webhook deliveries last, and
    only while WEBHOOK_URLS is set (`webhooks`)."""
    return (*QUEUES, WEBHOOKS_QUEUE) if webhooks else QUEUES


# Whoever holds this moves due jobs onto every queue and keeps RQ's registries of them
# (bot.runtime.scheduler): one process among all hosts. Its value is "host:pid:id".
SCHEDULER_LOCK = "rq:scheduler-lock:onboard-bot"
