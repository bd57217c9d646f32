"""Every keyword of docs/conversations.md through the pipeline: its effect, and its refusal (which changes nothing)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from conversation_helpers import Conversation, subjects, text_of

from inboxd.commands import COMMANDS, did_you_mean, split_keywords

BERLIN = ZoneInfo("Europe/Berlin")
FIELDS = ("owner", "status", "priority", "tags", "due_at", "on_track", "waiting_on", "resolved_at")


@pytest.fixture
def talk(fake_daemon) -> Conversation:
    return Conversation(fake_daemon)


def snapshot(talk: Conversation) -> tuple:
    item = talk.item
    return tuple(getattr(item, name) for name in FIELDS)


def refused(talk: Conversation, body: str, why: str, sender: str = "ana@example.org", **kwargs) -> None:
    """The mail changes nothing, is answered with command_error naming why, and is in the history."""
    before, events = snapshot(talk), len(talk.events())
    sent = talk.owner_says(body, sender=sender, **kwargs)
    assert snapshot(talk) == before
    assert [(to, subject.split(":")[0]) for to, subject in subjects(sent)] == \
        [(sender, f"[IT-{talk.item_id}] Not applied")]
    assert why in text_of(sent[0])
    new = talk.events()[events:]
    assert [e.kind for e in new] == ["refused"] and why in new[0].detail


def test_take_assigns_to_the_sender(talk):
    sent = talk.owner_says("#take")
    assert (talk.item.owner, talk.item.status) == ("ana@example.org", "open")
    assert subjects(sent) == [("ana@example.org", f"[IT-{talk.item_id}] Applied: Screen flickers")]
    assert "assigned to ana@example.org" in text_of(sent[0])


def test_take_refused_for_the_lead_who_is_not_a_member(talk):
    refused(talk, "#take", "lead@example.org is not a member of IT Help", sender="lead@example.org",
            recipient=talk.secret_for("lead@example.org"))  # with proof: only membership stands in the way


def test_assign_by_name_tells_the_new_owner(talk):
    sent = talk.owner_says("#assign bo")
    assert talk.item.owner == "bo@example.org"
    assert ("bo@example.org", f"[IT-{talk.item_id}] Assigned to you: Screen flickers") in subjects(sent)
    talk.owner_says("#assign ana@example.org", sender="bo@example.org")
    assert talk.item.owner == "ana@example.org"


def test_assign_refuses_an_unknown_member_with_a_suggestion(talk):
    refused(talk, "#assign boo", "'boo' is not a member of IT Help (did you mean bo?)")


def test_working_and_waiting_set_the_status(talk):
    talk.owner_says("#take\n#working")
    assert talk.item.status == "working"
    talk.owner_says("#waiting on the vendor")
    assert (talk.item.status, talk.item.waiting_on) == ("waiting", "the vendor")


def test_waiting_refused_on_a_done_item(talk):
    talk.owner_says("#done")
    refused(talk, "#waiting", "#waiting: the item is done")


def test_done_thanks_the_requester_and_asks_for_a_rating(talk):
    sent = talk.owner_says("#take\n#done replaced the cable")
    item = talk.item
    assert item.status == "done" and item.resolved_at is not None
    thanks = next(m for m in sent if m["To"] == "rosa@example.org")
    assert thanks["Subject"] == f"[IT-{talk.item_id}] Done: Screen flickers"
    assert "replaced the cable" in text_of(thanks) and "Reply with one number from 1" in text_of(thanks)
    assert item.first_response_at is not None


def test_done_refused_twice(talk):
    talk.owner_says("#done")
    refused(talk, "#done", "#done: the item is already done")


def test_eta_later_tells_the_requester_the_new_date_and_why(talk):
    sent = talk.owner_says("#eta 2026-12-04 waiting for the new screen")
    assert talk.item.due_at == datetime(2026, 12, 4, 17, 30, tzinfo=BERLIN)
    notice = next(m for m in sent if m["To"] == "rosa@example.org")
    body = text_of(notice)
    assert "Friday 4 December 2026, 17:30" in body and "Thursday 26 November 2026, 10:00" in body
    assert "Why: waiting for the new screen" in body


def test_eta_earlier_changes_the_date_without_bothering_the_requester(talk):
    sent = talk.owner_says("#eta tomorrow 12:00")
    assert talk.item.due_at == datetime(2026, 11, 24, 12, 0, tzinfo=BERLIN)
    assert [m["To"] for m in sent] == ["ana@example.org"]


@pytest.mark.parametrize("argument, why", [("2026-11-20", "is in the past"), ("someday", "is not a date"),
                                           ("", "#eta needs a date")])
def test_eta_refuses_past_and_unreadable_dates(talk, argument, why):
    refused(talk, f"#eta {argument}", why)


def test_ontrack_confirms_the_date(talk):
    talk.owner_says("#eta +2d\n#ontrack")
    assert talk.item.on_track is True
    talk.owner_says("#eta +3d")
    assert talk.item.on_track is False  # a new date needs a new confirmation


def test_ontrack_refused_on_a_closed_item(talk):
    talk.owner_says("#decline not ours")
    refused(talk, "#ontrack", "#ontrack: the item is declined")


def test_decline_tells_the_requester_why(talk):
    sent = talk.owner_says("#decline We only support company laptops.")
    assert talk.item.status == "declined"
    notice = next(m for m in sent if m["To"] == "rosa@example.org")
    assert "We only support company laptops." in text_of(notice)


def test_decline_refused_without_a_reason(talk):
    refused(talk, "#decline", "#decline needs a reason")


def test_redirect_hands_over_and_tells_the_requester_where(talk):
    sent = talk.owner_says("#redirect payroll@example.org")
    assert talk.item.status == "redirected"
    forwarded = next(m for m in sent if m["To"] == "payroll@example.org")
    assert "My screen flickers since Monday." in text_of(forwarded)
    assert "payroll@example.org" in text_of(next(m for m in sent if m["To"] == "rosa@example.org"))


@pytest.mark.parametrize("argument, why", [("payroll", "#redirect needs an address"),
                                           ("bo@example.org", "is this team; use #assign")])
def test_redirect_refused_without_an_outside_address(talk, argument, why):
    refused(talk, f"#redirect {argument}", why)


def test_priority_and_tags(talk):
    talk.owner_says("#priority high\n#tag +screen vip")
    assert (talk.item.priority, talk.item.tags) == ("high", ["screen", "vip"])
    talk.owner_says("#tag -vip")
    assert talk.item.tags == ["screen"]


def test_priority_refused_with_a_suggestion(talk):
    refused(talk, "#priority hgh", "(did you mean high?)")


def test_tag_refused_when_removing_a_tag_the_item_lacks(talk):
    refused(talk, "#tag -vip", "the item has no tag 'vip'")


def test_note_stays_inside_the_team(talk):
    sent = talk.owner_says("#note the vendor promised a call back\nRosa should not see this.")
    assert [m["To"] for m in sent] == ["ana@example.org"]
    (note,) = talk.events("note")
    assert note.detail == "the vendor promised a call back\nRosa should not see this."


def test_note_refused_when_empty(talk):
    refused(talk, "#note", "#note needs text")


def test_help_lists_every_keyword(talk):
    sent = talk.owner_says("#help")
    help_mail = next(m for m in sent if "Keywords for" in m["Subject"])
    assert all(c.usage in text_of(help_mail) for c in COMMANDS.values())


def test_unknown_keyword_suggests_the_near_miss(talk):
    refused(talk, "#dne", "line 1: unknown keyword #dne (did you mean #done?)")


def test_keywords_apply_all_or_nothing(talk):
    refused(talk, "#take\n#priority high\n#eta 2026-11-01", "line 3: #eta")
    assert talk.item.owner is None


@pytest.mark.parametrize("keyword", sorted(COMMANDS))
def test_every_keyword_from_a_non_member_is_plain_text(talk, keyword):
    before = snapshot(talk)
    sent = talk.requester_says(f"#{keyword} bo@example.org 2026-12-04")
    assert snapshot(talk) == before
    (refusal,) = talk.events("refused")
    assert f"#{keyword}" in refusal.detail and "only IT Help members and the lead" in refusal.detail
    assert all("Not applied" not in m["Subject"] for m in sent)  # text for the owner, not a command


def test_keyword_lines_only_at_the_top_of_the_new_text():
    keywords, rest = split_keywords("#take\n\n#eta friday parts late\nHello Rosa,\n#done is not a command here")
    assert [(k.name, k.argument) for k in keywords] == [("take", ""), ("eta", "friday parts late")]
    assert rest.startswith("Hello Rosa,") and "#done" in rest
    assert did_you_mean("tkae") == "unknown keyword #tkae (did you mean #take?)"


def test_done_on_a_request_without_a_sender_mails_only_the_team(fake_daemon):
    talk = Conversation(fake_daemon, sender="", request=b"Subject: no sender\r\nMessage-ID: <x@y>\r\n\r\nhelp\r\n")
    sent = talk.owner_says("#take\n#eta +3d\n#done fixed\nAll good now.")
    assert talk.item.status == "done" and [m["To"] for m in sent] == ["ana@example.org"]
