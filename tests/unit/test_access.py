"""The access policy's rules, one by one: every authorisation rule lives here, not in a
listener. Settings are a stand-in holding only what the policy reads."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import MagicMock

from bot.domain.access import NOT_ON_LIST, AccessPolicy, Decision


def policy(users: list[str] | None = None, channels: list[str] | None = None,
           check_restricted: bool = False) -> AccessPolicy:
    settings = SimpleNamespace(
        allowed_user_ids=users or [], allowed_usergroup_ids=[],
        allowed_channel_ids=channels or [], admin_user_ids=["U0ADMIN"],
        check_token_restricted=check_restricted)
    # The policy reads these five settings only; memberships are not looked at here.
    return AccessPolicy(settings, MagicMock())  # type: ignore[arg-type]


def refused_as_outsider(decision: Decision) -> bool:
    return not decision.allowed and decision.reason == NOT_ON_LIST


def test_listing_everyones_links_is_for_admins_only() -> None:
    rules = policy()
    assert rules.may_list("U0REP", "C0SALES", "user").allowed
    assert rules.may_list("U0REP", "C0SALES", "channel").allowed
    refused = rules.may_list("U0REP", "C0SALES", "all")
    assert not refused.allowed and "admins" in refused.reason
    assert rules.may_list("U0ADMIN", "C0SALES", "all").allowed


def test_listing_follows_issuing_first() -> None:
    assert refused_as_outsider(policy(users=["U0REP"]).may_list("U0OUT", "C0SALES", "user"))


def test_the_form_opens_for_a_user_allowed_in_some_allowed_channel() -> None:
    rules = policy(users=["U0REP"], channels=["C0SALES", "C0OPS"])
    assert rules.may_open_form("U0REP").allowed  # the channel is asked for on submission
    assert refused_as_outsider(rules.may_open_form("U0OUT"))
    assert not rules.may_issue("U0REP", "C0RANDOM").allowed  # submitting elsewhere is not


def test_the_form_opens_for_anyone_when_nothing_is_restricted() -> None:
    assert policy().may_open_form("U0ANY").allowed


def test_a_preview_follows_check_tokens_policy() -> None:
    open_checks = policy(users=["U0REP"])
    assert open_checks.may_preview("U0OUT", "C0SALES").allowed  # checks are open by default
    restricted = policy(users=["U0REP"], check_restricted=True)
    assert refused_as_outsider(restricted.may_preview("U0OUT", "C0SALES"))
    assert restricted.may_preview("U0REP", "C0SALES").allowed


def test_restricts_channels_says_whether_there_is_a_channel_list() -> None:
    assert policy(channels=["C0SALES"]).restricts_channels
    assert not policy().restricts_channels
