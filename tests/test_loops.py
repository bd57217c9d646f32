"""Issue 13, items 1 and 10, on a real mailbox: naive auto-responders cannot make inboxd loop; busy people are heard.

A naive responder answers every mail it gets with a new one: no `Auto-Submitted`, no `Precedence`,
threaded on what it answers, sent to its Reply-To. inboxd runs in this process on Dovecot (pymap
where absent) and a real SMTP capture, its clock stopped at one moment: everything below happens
within the same hour.
"""

from __future__ import annotations

from collections import Counter
from email.message import Message

import pytest
from conversation_helpers import reply, text_of
from helpers import make_mail
from test_security import LEAD, OTHER, OWNER, REQUESTER, Mailroom

from inboxd.models import Event, Item, Outbox
from inboxd.models import Message as Record

OUT_OF_OFFICE = "Thank you for your mail. I am out of the office until 7 December and will read it then."


@pytest.fixture
def room(tmp_path, mailbox, smtp_capture) -> Mailroom:
    return Mailroom(tmp_path, mailbox, smtp_capture)


def about_the_item(mails: list[Message], to: tuple[str, ...]) -> list[Message]:
    return [m for m in mails if m["To"] in to and m["X-Inboxd-Ref"] == "IT-1"]


def let_them_answer(room: Mailroom, responders: dict[str, str], rounds: int = 40) -> int:
    """Each responder answers each mail about the item it got with its text, round after round; rounds to the end."""
    waiting = about_the_item(room.sent, tuple(responders))
    for done in range(rounds):
        if not waiting:
            return done
        answers = (reply(m, m["To"], responders[m["To"]]) for m in waiting)
        waiting = about_the_item(room.run(*answers), tuple(responders))
    raise AssertionError(f"still answering after {rounds} rounds")


def assert_nothing_lost(answers_in: int) -> None:
    records = Record.select().where(Record.direction == "in")
    assert records.count() == answers_in and not records.where(Record.outcome == "parked").exists()
    assert Item.select().count() == 1  # every answer landed on the item, none became a request


def assert_a_short_chain(chain: list[Message]) -> None:
    """The responders ran out of mail to answer long before the bound: a few mails each, the lead not needed."""
    assert chain and max(Counter(m["To"] for m in chain).values()) <= 6, [(m["To"], str(m["Subject"])) for m in chain]
    assert not Event.select().where(Event.kind == "mail-held").exists()


def naive(*people: str) -> dict[str, str]:
    return dict.fromkeys(people, OUT_OF_OFFICE)


@pytest.mark.parametrize("people", [(REQUESTER, OWNER), (REQUESTER, OWNER, LEAD)], ids=["two", "three"])
def test_requester_and_owner_with_naive_responders_end_after_a_few_mails(room, people):
    """The owner's out-of-office is a team note, and its answer to that note's confirmation is answered no more."""
    room.request()  # Rosa's request, taken by Ana
    room.run(reply(room.last(REQUESTER), REQUESTER, "Any news on the monitor?"))
    before = len(room.sent)
    let_them_answer(room, naive(*people))
    assert_a_short_chain(room.sent[before:])
    assert_nothing_lost(Record.select().where(Record.direction == "in").count())


def test_a_requester_and_a_queue_of_naive_responders_on_an_unowned_item_end_after_a_few_mails(room):
    room.run(make_mail(f"Rosa Lind <{REQUESTER}>", "Monitor flickers", "My monitor flickers.",
                       message_id="<rosa-1@example.org>"))
    before = len(room.sent)
    let_them_answer(room, naive(REQUESTER, OWNER, OTHER))  # Rosa, and Ana and Bo who got the announcement
    assert_a_short_chain(room.sent[before:])
    assert_nothing_lost(Record.select().where(Record.direction == "in").count())
    assert room.item.owner is None


@pytest.mark.parametrize("people", [(REQUESTER,), (REQUESTER, OTHER)], ids=["requester", "requester-and-queue"])
def test_a_members_bot_that_relays_everything_is_stopped_by_the_bound_and_the_lead_told_once(room, people):
    """A member's mail rule answering each mail with #reply keeps a conversation going: the bound stops it."""
    room.request()
    bot = {OWNER: "#reply I am away; your mail is noted.", **naive(*people)}
    room.run(reply(room.last(REQUESTER), REQUESTER, "Any news on the monitor?"))
    let_them_answer(room, bot)
    bound, round_size = room.config.limits.mails_per_item, len(bot)
    to_people = Outbox.select().where((Outbox.item == 1) & (Outbox.kind != "mail_held")).count()
    assert bound <= to_people <= bound + round_size  # the round that reaches the bound is the last one
    told = [m for m in room.sent if m["To"] == LEAD]
    assert len(told) == 1 and "Mail held back" in str(told[0]["Subject"])  # the lead, once
    assert "IT-1" in text_of(told[0]) and "mails_per_item" in text_of(told[0])
    held = Event.select().where((Event.item == 1) & (Event.kind == "mail-held"))
    assert held.count() >= 1 and "mails_per_item = 30" in held.first().detail
    assert_nothing_lost(Record.select().where(Record.direction == "in").count())


def test_an_owner_with_an_out_of_office_alone_gets_two_mails_for_a_follow_up(room):
    """Only Ana answers everything: inboxd must not be the other half of her loop."""
    room.request()
    room.run(reply(room.last(REQUESTER), REQUESTER, "Any news on the monitor?"))
    before = len([m for m in room.sent if m["To"] == OWNER])
    rounds = let_them_answer(room, naive(OWNER))
    to_ana = [m for m in room.sent if m["To"] == OWNER][before - 1:]  # the forwarded follow-up, and what followed
    assert rounds <= 2 and len(to_ana) <= 2, [str(m["Subject"]) for m in to_ana]
    assert not Event.select().where(Event.kind == "mail-held").exists()


def test_ten_mails_between_requester_and_owner_in_an_hour_all_go_through(room):
    room.request()
    for turn in range(10):
        writer, reader = (REQUESTER, OWNER) if turn % 2 == 0 else (OWNER, REQUESTER)
        words = f"Message {turn} about the monitor."
        sent = room.run(reply(room.last(writer), writer, words if writer == REQUESTER else f"#reply {words}"))
        (to_reader,) = [m for m in sent if m["To"] == reader]  # the owner's words go to the requester with #reply
        assert words in text_of(to_reader), turn
    assert not Event.select().where(Event.kind == "mail-held").exists()
    assert LEAD not in Counter(m["To"] for m in room.sent)


def test_a_busy_colleague_gets_every_acknowledgement_and_the_team_hears_of_every_request(room):
    mails = [make_mail(f"Rosa Lind <{REQUESTER}>", f"Request {n}: laptop {n} needs a dock", f"Dock number {n}.")
             for n in range(10)]
    sent = room.run(*mails)
    acks = [m for m in sent if m["To"] == REQUESTER]
    assert len(acks) == 10 and len({m["X-Inboxd-Ref"] for m in acks}) == 10
    for member in (OWNER, OTHER):
        assert sorted(m["X-Inboxd-Ref"] for m in sent if m["To"] == member) == sorted(
            m["X-Inboxd-Ref"] for m in acks)
    assert not Event.select().where(Event.kind.in_(["flood-cap", "announcement-held"])).exists()


def test_an_unthreaded_responder_repeating_itself_gets_one_acknowledgement(room):
    """A responder that answers our acknowledgement with a fresh mail: a new request each time, the same text."""
    mail = make_mail("robot@example.net", "Your ticket", OUT_OF_OFFICE)  # the same text and subject each time
    for _ in range(5):
        sent = room.run(mail)
        mail = make_mail("robot@example.net", "Your ticket", OUT_OF_OFFICE) if any(
            m["To"] == "robot@example.net" for m in sent) else None
        if mail is None:
            break
    assert mail is None
    assert sum(m["To"] == "robot@example.net" for m in room.sent) == 1
    (capped,) = Event.select().where(Event.kind == "flood-cap")
    assert "same text as IT-1" in capped.detail and capped.item_id == 2
