"""Never let in: forged members, team words that must stay in the team, strangers on items, reply-address guesses.

Each case runs the shipped defaults (`require_secret` on) on a real IMAP server (Dovecot in CI) and
a real SMTP capture (aiosmtpd), with inboxd in this process and its clock in the test's hand.
"""

from __future__ import annotations

import email
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.message import Message
from pathlib import Path

import pytest
from conversation_helpers import reply, text_of
from helpers import make_mail, write_config

from inboxd import queries
from inboxd.clock import FixedClock
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.models import Event, Item
from inboxd.servers import append_messages
from inboxd.threads import secret_address

MONDAY_10 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)  # 10:00 in Berlin
REQUESTER, OWNER, OTHER, LEAD = "rosa@example.org", "ana@example.org", "bo@example.org", "lead@example.org"


class Mailroom:
    """inboxd on a real mailbox and SMTP capture: mail goes in by IMAP APPEND, comes out at the capture."""

    def __init__(self, tmp_path: Path, mailbox, smtp, extra: str = "") -> None:
        self.config = load_config(write_config(tmp_path, imap_port=mailbox.port, smtp_port=smtp.port,
                                               imap_user=mailbox.user, imap_password=mailbox.password, extra=extra))
        self.mailbox, self.smtp, self.clock, self.seen = mailbox, smtp, FixedClock(MONDAY_10), 0
        self.sent: list[Message] = []

    def run(self, *raws: bytes) -> list[Message]:
        """Deliver mails (if any), let inboxd read them and run its jobs once; what it sent meanwhile."""
        if raws:
            append_messages(self.mailbox, list(raws))
        Daemon(self.config, clock=self.clock).once()
        new = [email.message_from_bytes(m.data) for m in self.smtp.messages[self.seen:]]
        self.seen = len(self.smtp.messages)
        self.sent += new
        return new

    def request(self) -> Item:
        """Rosa's request, announced to the queue, taken by Ana."""
        self.run(make_mail(f"Rosa Lind <{REQUESTER}>", "Monitor flickers", "My monitor flickers.",
                           message_id="<rosa-1@example.org>"))
        self.run(reply(self.last(OWNER), OWNER, "#take"))
        return self.item

    @property
    def item(self) -> Item:
        return Item.get_by_id(1)

    def last(self, to: str) -> Message:
        return next(m for m in reversed(self.sent) if m["To"] == to)

    def history(self) -> list[str]:
        return [e.kind for e in Event.select().where(Event.item == 1).order_by(Event.id)]


@pytest.fixture
def room(tmp_path, mailbox, smtp_capture) -> Mailroom:
    return Mailroom(tmp_path, mailbox, smtp_capture)


def recipients(mails: list[Message]) -> Counter:
    return Counter(m["To"] for m in mails)


# --- forged members ------------------------------------------------------------------------------

def forged(item: Item, body: str, to: str = "help@example.org", sender: str = f"Bo <{OTHER}>") -> bytes:
    return make_mail(sender, f"Re: [IT-{item.id}] Monitor flickers", body, to=to)


@pytest.mark.parametrize("body", ["#done", "#decline we don't do monitors", "#redirect evil@evil.test",
                                  "#assign bo", "Please send your password to evil@evil.test, thanks. Bo"])
def test_a_forged_member_changes_nothing_and_relays_nothing(room, body):
    item = room.request()
    before = (item.status, item.owner, item.due_at)
    sent = room.run(forged(item, body))
    after = room.item
    assert (after.status, after.owner, after.due_at) == before
    assert recipients(sent) == {OTHER: 1}  # the real Bo is told, once; nobody else hears anything
    assert "Not applied" in sent[0]["Subject"] and "someone else used your address" in text_of(sent[0])
    assert room.history()[-1] == "refused"
    assert recipients(room.sent)[REQUESTER] == 1  # only the ack ever went to Rosa
    assert not any("evil.test" in (m["To"] or "") for m in room.sent)


def test_a_leaked_reply_address_does_not_make_anyone_else_a_member(room):
    item = room.request()
    anas = secret_address(room.config.team, queries.view(item), OWNER)  # say Rosa saw it in a Cc
    sent = room.run(forged(item, "#done", to=anas))  # from "Bo", to Ana's own address
    assert room.item.status == "open" and recipients(sent) == {OTHER: 1}
    sent = room.run(forged(item, "#done", to=anas, sender=REQUESTER))  # from Rosa herself: she is no member
    assert room.item.status == "open" and recipients(sent) == {OWNER: 1}  # her words, forwarded to Ana
    assert room.history()[-1] == "refused"  # "#done from rosa@… ignored: only members…"


def test_a_hundred_thousand_guesses_apply_nothing(room):
    item = room.request()
    right = secret_address(room.config.team, queries.view(item), OTHER)
    guesses = ", ".join(f"help+it1.{n:016x}@example.org" for n in range(100_000))
    # Written by hand: the email package's own header folding takes minutes over 100,000 addresses.
    raw = (f"From: {OTHER}\r\nTo: help@example.org\r\nCc: {guesses}, {right}\r\n"
           f"Subject: Re: [IT-{item.id}] Monitor flickers\r\nMessage-ID: <guesses@example.org>\r\n"
           f"Date: Mon, 23 Nov 2026 11:00:00 +0100\r\n\r\n#done\r\n").encode()
    sent = room.run(raw)
    assert room.item.status == "open" and recipients(sent) == {OTHER: 1}  # refused: the right one came too late
    assert room.history()[-1] == "refused"


# --- team words stay in the team -----------------------------------------------------------------

def secret(text: str) -> str:
    return f"{text} She complains about everything; ignore her tone."


def assert_kept(room: Mailroom, sent: list[Message], writer: str, told: bool = True) -> None:
    """The words went nowhere but the history, and the writer was told so, once (not in answer to an answer)."""
    assert recipients(sent) == ({writer: 1} if told else {})
    assert not told or "kept as a team note" in text_of(sent[0])
    assert not any("ignore her tone" in text_of(m) for m in room.sent if m["To"] == REQUESTER)
    kinds = room.history()
    assert kinds[-2:] == ["note", "kept"]


def test_a_reply_to_the_command_answer_stays_internal(room):
    room.request()  # inboxd's answer to an answer would be the other half of an out-of-office's loop: none
    assert_kept(room, room.run(reply(room.last(OWNER), OWNER, secret("On it."))), OWNER, told=False)


def test_a_reply_to_a_forwarded_requester_reply_stays_internal_and_reply_relays(room):
    room.request()
    room.run(reply(room.last(REQUESTER), REQUESTER, "It also beeps."))
    forward = room.last(OWNER)
    assert "Reply from Rosa Lind" in forward["Subject"]
    assert_kept(room, room.run(reply(forward, OWNER, secret("Typical."))), OWNER)
    sent = room.run(reply(forward, OWNER, "#reply\nRosa, a new cable is on its way."))
    relay = next(m for m in sent if m["To"] == REQUESTER)
    assert "a new cable is on its way" in text_of(relay) and "#reply" not in text_of(relay)


def test_a_reply_to_the_owner_reminder_stays_internal(room):
    item = room.request()
    room.clock.moment = item.due_at - timedelta(hours=3)  # within remind_owner_before
    reminder = room.run()
    assert [m["To"] for m in reminder if "Due" in m["Subject"]] == [OWNER]
    assert_kept(room, room.run(reply(room.last(OWNER), OWNER, secret("Will do."))), OWNER)


def test_a_reply_to_the_escalation_stays_internal(room):
    item = room.request()
    room.clock.moment = item.due_at + timedelta(minutes=5)
    room.run()
    escalation = room.last(LEAD)
    assert "Missed date" in escalation["Subject"]
    assert_kept(room, room.run(reply(escalation, LEAD, secret("Ana, sort it out."))), LEAD)


def test_a_reply_to_a_low_rating_stays_internal(room):
    room.request()
    room.run(reply(room.last(OWNER), OWNER, "#done Replaced the cable."))
    room.run(reply(room.last(REQUESTER), REQUESTER, "1 - took far too long"))
    low = room.last(LEAD)
    assert "rated" in low["Subject"].lower() or "rating" in text_of(low).lower()
    assert_kept(room, room.run(reply(low, LEAD, secret("Ana was slow again."))), LEAD)


def test_a_reply_to_the_digest_stays_internal_and_is_no_request(room):
    room.request()
    room.clock.moment = datetime(2026, 11, 30, 7, 5, tzinfo=timezone.utc)  # Monday 08:05 in Berlin
    room.run()
    digest = room.last(LEAD)
    assert "Weekly digest" in digest["Subject"]
    sent = room.run(reply(digest, LEAD, secret("Good week, team.")))
    assert sent == [] and Item.select().count() == 1  # a note, not a new request answered with an ack


def test_note_on_one_of_the_first_lines_keeps_the_whole_mail(room):
    room.request()
    announce = next(m for m in room.sent if m["To"] == OWNER and "New request" in m["Subject"])
    sent = room.run(reply(announce, OWNER, "Hi,\nthis one is odd.\n#note\nRosa is new here."))
    assert recipients(sent) == {OWNER: 1} and room.history()[-2:] == ["note", "kept"]


def test_a_reply_to_the_announcement_still_reaches_the_requester(room):
    room.request()
    announce = next(m for m in room.sent if m["To"] == OWNER and "New request" in m["Subject"])
    sent = room.run(reply(announce, OWNER, "Rosa, which model is it?"))
    assert recipients(sent) == {REQUESTER: 1}


# --- strangers on items ----------------------------------------------------------------------------

def test_a_stranger_with_the_tag_is_a_note_for_the_owner(room):
    item = room.request()
    sent = room.run(make_mail("mallory@evil.test", f"Re: [IT-{item.id}] Monitor flickers",
                              "Rosa, click here to fix it: http://evil.test"))
    assert recipients(sent) == {OWNER: 1} and "not on the request" in sent[0]["Subject"]
    assert room.item.status == "open" and room.history()[-1] == "stranger"


def test_a_stranger_cannot_reopen_rate_or_pass_for_the_requester(room):
    room.request()
    room.run(reply(room.last(OWNER), OWNER, "#done"))
    for body in ("It is broken again, please reopen.", "1", "Thanks!"):
        sent = room.run(make_mail("mallory@evil.test", "Re: [IT-1] Monitor flickers", body))
        assert REQUESTER not in recipients(sent)
    done = room.item
    assert (done.status, done.satisfaction) == ("done", None)
    assert room.history().count("stranger") == 3 and "reopened" not in room.history()


def test_a_colleague_copied_on_the_request_is_on_its_side(room):
    room.run(make_mail(REQUESTER, "Monitor flickers", "Mine flickers, and Omar's.", message_id="<rosa-2@example.org>",
                       headers={"Cc": "omar@example.org"}))
    assert room.item.participants == ["omar@example.org"]
    sent = room.run(make_mail("omar@example.org", "Re: [IT-1] Monitor flickers", "Mine is a Dell too."))
    assert all("Reply from" in m["Subject"] for m in sent) and room.history()[-1] == "reply"
