"""One incoming mail, at most one mail per recipient: the merge on plain values and through the pipeline; the limit."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import getaddresses

import pytest
from conversation_helpers import Conversation, text_of
from helpers import write_config

from inboxd.commands import (COMMANDS, MAX_KEYWORDS, CommandContext, Effect, merge_keyword_mails, one_per_recipient,
                             plan_commands, with_answer)
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.domain import ItemState, Reply, Status
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource

ROSA, ANA, BO = "rosa@example.org", "ana@example.org", "bo@example.org"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PROMISED = NOW + timedelta(days=3)
BEFORE = ItemState(None, Status.NEW, "normal", (), PROMISED, False, None, None)


def new_date(old: datetime | None, reason: str) -> Reply:
    """The mail one later #eta plans, as builtin.Eta does."""
    return Reply("deadline_changed", (ROSA,), extra={"reason": reason, "old_due_at": old}, to_requester=True)


def assigned(to: str) -> Reply:
    return Reply("assigned", (to,), threaded=False, internal=True)


def templates(mails) -> list[tuple[str, tuple[str, ...]]]:
    return [(m.template, m.to) for m in mails]


# --- the requester --------------------------------------------------------------------------

def test_500_later_dates_are_one_new_date_from_the_date_before_the_mail_with_the_last_reason():
    dates = [PROMISED + timedelta(hours=i) for i in range(1, 501)]
    planned = [new_date(old, f"reason {i}") for i, old in enumerate([PROMISED, *dates[:-1]])]
    (mail,) = merge_keyword_mails(planned, BEFORE, replace(BEFORE, due_at=dates[-1]), ANA)
    assert mail.template == "deadline_changed" and mail.to == (ROSA,)
    assert mail.extra["old_due_at"] == PROMISED and mail.extra["reason"] == "reason 499"


def test_a_later_date_then_an_earlier_one_than_before_the_mail_tells_the_requester_nothing():
    planned = [new_date(PROMISED, "parts late")]  # #eta +5d, then #eta +1d plans no mail
    assert merge_keyword_mails(planned, BEFORE, replace(BEFORE, due_at=NOW + timedelta(days=1)), ANA) == ()
    assert merge_keyword_mails(planned, BEFORE, BEFORE, ANA) == ()  # back to the very date promised


def test_a_first_date_is_no_broken_promise():
    first = PROMISED + timedelta(days=1)
    planned = [new_date(first, "")]  # no date before the mail: #eta sets one, a second #eta moves it later
    assert merge_keyword_mails(planned, replace(BEFORE, due_at=None), replace(BEFORE, due_at=first + timedelta(1)),
                               ANA) == ()


def test_a_closing_mail_outweighs_a_new_date():
    planned = [new_date(PROMISED, "parts late"), Reply("resolved", (ROSA,), extra={"summary": ""}, to_requester=True)]
    done = replace(BEFORE, due_at=PROMISED + timedelta(days=2), status=Status.DONE, resolved_at=NOW)
    assert templates(merge_keyword_mails(planned, BEFORE, done, ANA)) == [("resolved", (ROSA,))]


def test_a_closing_mail_undone_in_the_same_mail_is_not_sent():
    planned = [Reply("resolved", (ROSA,), to_requester=True)]  # #done, then #working reopens
    assert merge_keyword_mails(planned, BEFORE, replace(BEFORE, status=Status.WORKING), ANA) == ()


def test_only_the_last_redirect_is_forwarded():
    planned = [Reply("forwarded", ("payroll@example.org",)), Reply("redirected", (ROSA,), to_requester=True),
               Reply("forwarded", ("hr@example.org",)), Reply("redirected", (ROSA,), to_requester=True)]
    merged = merge_keyword_mails(planned, BEFORE, replace(BEFORE, status=Status.REDIRECTED), ANA)
    assert templates(merged) == [("forwarded", ("hr@example.org",)), ("redirected", (ROSA,))]
    assert merged[1] is planned[3]


# --- the owner ------------------------------------------------------------------------------

def test_assign_back_and_forth_is_one_mail_to_the_final_owner():
    planned = [assigned(BO if i % 2 == 0 else "cy@example.org") for i in range(500)]  # sent by ana
    merged = merge_keyword_mails(planned, BEFORE, replace(BEFORE, owner="cy@example.org"), ANA)
    assert templates(merged) == [("assigned", ("cy@example.org",))]


def test_no_assigned_mail_when_the_owner_ends_where_it_began_or_with_the_sender():
    planned = [assigned(BO), assigned(ANA)]
    assert merge_keyword_mails(planned, replace(BEFORE, owner=ANA), replace(BEFORE, owner=ANA), BO) == ()
    assert merge_keyword_mails([assigned(BO)], BEFORE, replace(BEFORE, owner=ANA), ANA) == ()  # #assign bo, #take


# --- the sender -----------------------------------------------------------------------------

def test_help_with_other_keywords_is_one_command_ok_with_the_table():
    effects = [Effect(BEFORE, "sent you the list of keywords", help=True), Effect(BEFORE, "assigned to ana")]
    (answer,) = with_answer([], ANA, effects)
    assert (answer.template, answer.to, answer.extra["with_keywords"]) == ("command_ok", (ANA,), True)


def test_help_alone_is_the_help_mail_and_other_keywords_a_plain_command_ok():
    assert templates(with_answer([], ANA, [Effect(BEFORE, "list", help=True)])) == [("help", (ANA,))]
    (answer,) = with_answer([], ANA, [Effect(BEFORE, "priority: high")])
    assert answer.template == "command_ok" and answer.extra["with_keywords"] is False
    assert with_answer([Reply("relay", (ROSA,))], ANA, []) == [Reply("relay", (ROSA,))]  # text only: no answer


def test_one_address_gets_its_most_important_mail_in_the_planned_order():
    mails = [Reply("relay", (ROSA,)), assigned(BO), Reply("resolved", (ROSA,)), Reply("command_ok", (BO,))]
    assert templates(one_per_recipient(mails)) == [("resolved", (ROSA,)), ("command_ok", (BO,))]


# --- through plan_commands: real keywords, and the limit ------------------------------------

@pytest.fixture
def ctx(config) -> CommandContext:
    return CommandContext(config, ANA, NOW, ROSA, "Rosa Lind")


def test_as_many_eta_lines_as_allowed_plan_one_new_date_and_a_history_line_each(ctx):
    text = "\n".join(f"#eta +{hours}h reason {hours}" for hours in range(80, 80 + MAX_KEYWORDS))
    plan = plan_commands(text, BEFORE, ctx)
    (mail,) = plan.mails
    assert mail.template == "deadline_changed" and mail.extra["old_due_at"] == PROMISED
    assert mail.extra["reason"] == "reason 99" and len(plan.effects) == MAX_KEYWORDS


def test_eta_then_done_plans_one_resolved(ctx):
    plan = plan_commands("#eta +5d parts late\n#done replaced the screen", BEFORE, ctx)
    assert templates(plan.mails) == [("resolved", (ROSA,))]


def test_alternating_assign_plans_one_assigned_to_the_final_owner(ctx):
    plan = plan_commands("\n".join("#assign bo" if i % 2 == 0 else "#assign ana" for i in range(19)), BEFORE, ctx)
    assert plan.state.owner == BO and templates(plan.mails) == [("assigned", (BO,))]
    plan = plan_commands("\n".join("#assign bo" if i % 2 == 0 else "#assign ana" for i in range(20)), BEFORE, ctx)
    assert plan.state.owner == ANA and plan.mails == ()  # the sender ends as owner: told by command_ok


def test_more_keywords_than_the_limit_are_refused_whole_naming_the_limit(ctx):
    assert MAX_KEYWORDS == 20
    assert plan_commands("\n".join(["#priority high"] * MAX_KEYWORDS), BEFORE, ctx).state.priority == "high"
    plan = plan_commands("\n".join(["#priority high"] * (MAX_KEYWORDS + 1)), BEFORE, ctx)
    assert plan.state == BEFORE and plan.effects == [] and plan.mails == ()
    assert plan.problems == ["21 keywords in one mail: at most 20 are accepted, so none was applied; "
                             "send them in several mails"]


def test_reading_the_keywords_of_a_megabyte_is_linear(ctx):
    text = "#eta friday the vendor is late\n" * 33_000  # 1 MB, 33,000 keyword lines
    start = time.perf_counter()
    plan = plan_commands(text, BEFORE, ctx)
    assert time.perf_counter() - start < 3  # quadratic would be hours; linear is a fraction of a second
    assert plan.problems == [f"33000 keywords in one mail: at most {MAX_KEYWORDS} are accepted, so none was "
                             "applied; send them in several mails"] and plan.effects == []


# --- through the pipeline on fakes, with and without [commands] require_secret ---------------

SECURE = "[commands]\nrequire_secret = true\n"


@pytest.fixture(params=["", SECURE], ids=["default", "require_secret"])
def talk(request, tmp_path, clock) -> Conversation:
    """A request on a daemon with fakes; members answer inboxd's mail, so its secret Reply-To when that is on."""
    daemon = Daemon(load_config(write_config(tmp_path, extra=request.param)), clock=clock, source=FakeSource(),
                    transport=FakeTransport())
    return Conversation(daemon)


def per_recipient(mails: list[Message]) -> Counter:
    return Counter(address for m in mails for _, address in getaddresses([m["To"]]))


def test_500_eta_lines_are_refused_in_one_mail_and_the_requester_hears_nothing(talk):
    promised = talk.item.due_at
    sent = talk.owner_says("\n".join(f"#eta +{hours}h reason {hours}" for hours in range(80, 580)))
    assert per_recipient(sent) == {ANA: 1} and "Not applied" in sent[0]["Subject"]
    assert "500 keywords in one mail: at most 20 are accepted" in text_of(sent[0])
    assert talk.item.due_at == promised and [e.kind for e in talk.events()][-1:] == ["refused"]


def test_eta_lines_tell_the_requester_once_from_the_date_promised_with_the_last_reason(talk):
    events = len(talk.events())
    sent = talk.owner_says("\n".join(f"#eta +{hours}h reason {hours}" for hours in range(80, 100)))
    assert per_recipient(sent) == {ROSA: 1, ANA: 1}
    notice = text_of(talk.last(ROSA))
    assert "(Thursday 26 November 2026, 10:00)" in notice and "Why: reason 99" in notice
    assert "Why: reason 98" not in notice
    assert [e.kind for e in talk.events()[events:]] == ["command"] * 20  # the history keeps every line


def test_500_alternating_assign_lines_send_at_most_one_mail_to_anyone(talk):
    sent = talk.owner_says("\n".join("#assign ana" if i % 2 else "#assign bo" for i in range(500)))
    assert per_recipient(sent) == {ANA: 1} and talk.item.owner is None


def test_alternating_assign_lines_tell_only_the_final_owner(talk):
    sent = talk.owner_says("\n".join("#assign bo" if i % 2 else "#assign ana" for i in range(20)))
    assert talk.item.owner == BO and per_recipient(sent) == {ANA: 1, BO: 1}
    assert "Assigned to you" in talk.last(BO)["Subject"] and "Applied" in talk.last(ANA)["Subject"]
    sent = talk.owner_says("\n".join("#assign bo" if i % 2 else "#assign ana" for i in range(19)), sender=BO)
    assert talk.item.owner == ANA and per_recipient(sent) == {ANA: 1, BO: 1}


def test_assign_away_and_back_tells_nobody_new(talk):
    talk.owner_says("#assign bo")
    sent = talk.owner_says("#assign ana\n#assign bo\n#priority high")
    assert talk.item.owner == BO and per_recipient(sent) == {ANA: 1}


def test_eta_and_done_send_the_requester_only_the_thank_you(talk):
    sent = talk.owner_says("#take\n#eta +5d parts late\n#done replaced the screen")
    assert per_recipient(sent) == {ROSA: 1, ANA: 1}
    assert "Done:" in talk.last(ROSA)["Subject"] and "replaced the screen" in text_of(talk.last(ROSA))


def test_a_date_moved_out_and_back_relays_the_text_instead(talk):
    promised = talk.item.due_at
    sent = talk.owner_says("#eta +10d parts late\n#eta +1d\nHi Rosa, good news: the part is here.")
    assert talk.item.due_at < promised and per_recipient(sent) == {ROSA: 1, ANA: 1}
    relay = talk.last(ROSA)
    assert "the part is here" in text_of(relay) and "New date" not in relay["Subject"]


def test_help_with_take_is_one_answer_with_the_table(talk):
    sent = talk.owner_says("#help\n#take")
    assert per_recipient(sent) == {ANA: 1} and "Applied" in sent[0]["Subject"]
    assert "assigned to ana@example.org" in text_of(sent[0])
    assert all(c.usage in text_of(sent[0]) for c in COMMANDS.values())
    (alone,) = talk.owner_says("#help")
    assert "Keywords for" in alone["Subject"] and "#redirect payroll@example.org" in text_of(alone)
    (plain,) = talk.owner_says("#priority high")
    assert "#redirect payroll@example.org" not in text_of(plain)
