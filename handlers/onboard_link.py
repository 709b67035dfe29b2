"""`/onboard-link [count] [customer note] [ref:CRM reference]`, `list [channel|all]`,
`forget <link>` and `report [days]`."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, BoltContext

from bot.domain.models import Requester
from bot.domain.store import StoreUnavailable
from bot.engine.queue import new_batch_id
from bot.engine.registry import Job
from bot.slack import linkviews, messages
from bot.slack.command_text import ForgetRequest, ListRequest, OnboardRequest, ReportRequest
from bot.slack.core import Core
from bot.slack.inputs import requester_from
from handlers.enqueue import enqueue_then_ack
from handlers.refusal import refusal
from handlers.slash import ONBOARD_LINK, parse_or_explain


def onboard_link(ack: Ack, command: dict[str, Any], context: BoltContext) -> None:
    core: Core = context["core"]
    if (request := parse_or_explain(ack, command, ONBOARD_LINK,
                                    report_days=core.settings.audit_retention_days)) is None:
        return
    requester = requester_from(command)
    if isinstance(request, ListRequest):
        decision = core.access.may_list(requester.user_id, requester.channel_id, request.scope)
    elif isinstance(request, ReportRequest):  # one's own links, as `list` shows them
        decision = core.access.may_list(requester.user_id, requester.channel_id, "user")
    else:
        decision = core.access.may_issue(requester.user_id, requester.channel_id)
    if not decision.allowed:
        ack(**refusal(core, requester, "onboard-link", decision.reason))
        return
    if isinstance(request, ListRequest):
        _list(core, ack, requester, request)
        return
    response_url = command["response_url"]
    if isinstance(request, ReportRequest):
        # Admins see the team's links, others their own.
        team = core.access.is_admin(requester.user_id)
        enqueue_then_ack(core, ack, Job.SEND_REPORT, response_url, requester, request.days,
                         team, ack_with=messages.preparing_report())
        return
    if isinstance(request, ForgetRequest):
        enqueue_then_ack(core, ack, Job.FORGET, response_url, requester, request.token, None)
        return
    _issue(core, ack, requester, request, response_url)


def _issue(core: Core, ack: Ack, requester: Requester, request: OnboardRequest,
           response_url: str) -> None:
    """Links, or the customer's live ones: looked up here (Redis only), so that the ack
    never says "Creating…" for a command that then creates nothing."""
    try:
        existing = core.onboarding.existing(requester, request.count, request.note,
                                            request.customer_ref)
    except StoreUnavailable as error:
        ack(**messages.problem(error))
        return
    if existing is not None:
        ack(**linkviews.already_issued(*existing, request.count, request.note,
                                       request.customer_ref))
        return
    # force=True: the job need not look again (it would only find what a concurrent
    # command for the same customer made, after this ack promised links).
    enqueue_then_ack(core, ack, Job.ISSUE_LINKS, response_url, requester, request.count,
                     request.note, new_batch_id(), False, True, idempotent=False,
                     ack_with=messages.working(request.count),
                     job_kwargs={"customer_ref": request.customer_ref})


def _list(core: Core, ack: Ack, requester: Requester, request: ListRequest) -> None:
    """Answered in the ack itself: a few Redis reads, no job."""
    try:
        listing = core.onboarding.live(requester, request.scope, messages.MAX_LISTED)
        ack(**linkviews.listing(listing, core.onboarding.details(listing), request.scope,
                                requester.user_id))
    except StoreUnavailable as error:
        ack(**messages.problem(error))


def register(app: App) -> None:
    app.command("/onboard-link")(onboard_link)
