"""Links Exotel made while Redis did not answer: shown to the requester through the reply
path with Redis down, then tracked by `python -m bot track` (its `run`) once Redis is back;
and the CLI on its own against the suite's real Redis."""

from __future__ import annotations

import html
import io
import shlex
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis

from bot.cli import track
from bot.domain.audit import STREAM
from bot.domain.onboarding import IssueResult
from bot.domain.ratelimit import LinkQuota, QuotaExceeded
from bot.domain.recording import RecordRetry, UntrackedLink
from bot.domain.reminders import DUE_KEY
from bot.domain.store import now
from bot.engine.queue import Reply, StepExecution, new_batch_id
from bot.exotel.client import CreateOutcome, OnboardingLink
from bot.exotel.sandbox import LINK_BASE, ExotelSandbox
from bot.runtime import jobs
from bot.runtime.execution import complete_with
from bot.settings import LINK_TTL, Settings
from bot.slack.core import Core
from testkit.processes import RedisProcess, free_port
from testkit.slack import FakeSlack
from tests.blockkit import block_text, mrkdwn_texts
from tests.support import REP, settings_for

TOKEN = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
URL = LINK_BASE + TOKEN


class StopsRedis:
    """Exotel as the use case calls it, with Redis stopping the moment a link comes back."""

    def __init__(self, exotel: Any, server: RedisProcess) -> None:
        self.exotel, self.server = exotel, server

    def create_links(self, count: int,
                     on_link: Callable[[OnboardingLink], object] | None = None) -> CreateOutcome:
        def record(link: OnboardingLink) -> None:
            self.server.stop()
            if on_link is not None:
                on_link(link)

        return self.exotel.create_links(count, on_link=record)

    def token_status(self, token: str) -> str:
        return str(self.exotel.token_status(token))


def tracked_by_run(settings: Settings, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = track.run(settings, list(args), out, err)
    return code, out.getvalue(), err.getvalue()


def test_a_link_made_as_redis_stops_reaches_the_requester_and_is_tracked_later(
    make_core: Callable[..., Core], slack: FakeSlack
) -> None:
    with RedisProcess() as server:
        core = make_core(REDIS_URL=server.url)
        core.onboarding.exotel = StopsRedis(core.onboarding.exotel, server)
        core.onboarding.recording = RecordRetry(within=0.3, first_pause=0.05)
        jobs.issue_links(Reply.to(slack.response_url("down")), REP, 1, "ACME & co",
                         new_batch_id())
        [reply] = slack.replies("down")  # sent with Redis still down
        text = block_text(reply)
        assert "This link is not tracked by the bot" in text and "will not remind you of it" in text
        [code] = [t.split("```")[1] for t in mrkdwn_texts(reply) if "```" in t]
        argv = shlex.split(html.unescape(code))
        url = argv[4]
        assert url.startswith(LINK_BASE) and url in text

        server.start()  # back, empty (no persistence): the operator runs the command
        done, out, _ = tracked_by_run(core.settings, *argv[4:])
        assert done == 0 and out.startswith(f"Tracked …{url[-4:]} for U0REP")
        token = url.removeprefix(LINK_BASE)
        link = core.store.get_link(token)
        assert link is not None and link.note == "ACME & co" and link.requester == REP
        [batch] = core.onboarding.live(REP, "user", 10).batches
        assert batch.tokens == [token]


def test_a_workflow_step_outputs_an_untracked_link_and_its_requester_is_told(
    make_core: Callable[..., Core], slack: FakeSlack
) -> None:
    link = UntrackedLink(url=URL, token=TOKEN, requester=REP, note="ACME", batch_id="b1",
                         issued_at=now())
    complete_with(make_core(), StepExecution("Fx0STEP", "xwfp-step"),
                  IssueResult(requested=1, note="ACME", untracked=[link]))
    [params] = slack.params("functions.completeSuccess")
    assert params["outputs"] == {"links": URL, "first_link": URL}
    [dm] = slack.params("chat.postMessage")
    assert URL in dm["text"] + str(dm["blocks"]) and "This link is not tracked" in str(dm)


def test_track_records_a_link_as_an_issued_one_for_its_user(
    make_core: Callable[..., Core], redis_client: redis.Redis
) -> None:
    core = make_core()
    issued_at = now() - timedelta(hours=2)
    done, out, err = tracked_by_run(core.settings, URL, "--user", "U0REP", "--team", "T0FAKE",
                                    "--channel", "C0SALES", "--note", "ACME Corp",
                                    "--issued-at", issued_at.isoformat())
    assert (done, err) == (0, "")
    link = core.store.get_link(TOKEN)
    assert link is not None and (link.url, link.requester, link.note) == (URL, REP, "ACME Corp")
    assert link.expires_at == issued_at + LINK_TTL
    batch = core.store.get_batch(link.batch_id)
    assert batch is not None and batch.tokens == [TOKEN]
    assert batch.reminder_due == issued_at + LINK_TTL - timedelta(hours=1)
    assert out == (f"Tracked …e1f0 for U0REP as batch {batch.batch_id}: expires "
                   f"{batch.expires_at:%Y-%m-%d %H:%M} UTC, reminder "
                   f"{batch.reminder_due:%Y-%m-%d %H:%M} UTC in C0SALES\n")
    assert core.onboarding.live(REP, "user", 10).batches == [batch]
    assert core.statuses.get(TOKEN).status == "VALID"  # type: ignore[union-attr]
    due = core.reminders.redis.zscore(DUE_KEY, batch.batch_id)  # its reminder, scheduled
    assert due == pytest.approx(batch.reminder_due.timestamp())
    assert core.store.note_index_get(REP, "acme corp") == batch.batch_id
    [entry] = [fields for _, fields in redis_client.xrange(STREAM)]
    assert (entry["action"], entry["tokens"], entry["batch_id"]) == (
        "track", "…e1f0", batch.batch_id)
    assert not redis_client.keys("LIMITS*")  # no quota charged

    again, out, _ = tracked_by_run(core.settings, URL, "--user", "U0OTHER")
    assert again == 0 and out.startswith("…e1f0 is tracked already (batch ")
    assert core.store.get_link(TOKEN) == link
    assert TOKEN not in out


@pytest.mark.parametrize(("args", "says"), [
    ([TOKEN, "--user", "U0REP"], "give the whole link"),
    (["https://messaging.exotel.com/ua-links/isv-onboard/word", "--user", "U0REP"],
     "not an onboarding link"),
    ([URL], "the following arguments are required: --user"),
    ([URL, "--user", "bob"], "--user must be a user id"),
    ([URL, "--user", "U0REP", "--channel", "#sales"], "--channel must be a channel id"),
    ([URL, "--user", "U0REP", "--issued-at", "yesterday"], "--issued-at must be an ISO-8601"),
    ([URL, "--user", "U0REP", "--note", "x" * 501], "customer note to 500 characters"),
    ([URL, "--user", "U0REP", "--issued-at", "2020-01-01T00:00:00Z"], "24 hours ended"),
])
def test_track_refuses_bad_input_in_one_line_and_changes_nothing(
    make_core: Callable[..., Core], redis_client: redis.Redis, args: list[str], says: str
) -> None:
    done, out, err = tracked_by_run(make_core().settings, *args)
    assert (done, out) == (2, "")
    assert says in err and err.count("\n") == 1 and err.startswith("python -m bot track: ")
    assert TOKEN not in err
    assert redis_client.dbsize() == 0


def test_track_with_redis_down_says_so_and_exits_1(
    exotel: ExotelSandbox, slack: FakeSlack
) -> None:
    settings = settings_for(f"redis://127.0.0.1:{free_port()}/0", exotel, slack)
    done, out, err = tracked_by_run(settings, URL, "--user", "U0REP")
    assert (done, out) == (1, "")
    assert "Redis is not answering" in err and err.count("\n") == 1


def test_the_quota_charges_a_link_once_however_often_it_is_asked(
    redis_client: redis.Redis
) -> None:
    quota = LinkQuota(redis_client, per_day=3)
    for token in ("tok-1", "tok-1", "tok-2"):  # the second: a retry after a lost answer
        quota.charge("T0FAKE", "U0REP", token)
    quota.check("T0FAKE", "U0REP", 1)
    with pytest.raises(QuotaExceeded) as refused:
        quota.check("T0FAKE", "U0REP", 2)
    assert refused.value.remaining == 1
