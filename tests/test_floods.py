"""Loops and floods: no answer to what looks like a loop, a flood announced in batches, a bound per item; nothing lost."""

from __future__ import annotations

import email
import re
from datetime import timedelta

from conversation_helpers import text_of
from helpers import make_mail, write_config

from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.models import Event, Item, Outbox
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource
from inboxd.sweep import HELD_BATCH


def sweep(daemon: Daemon) -> list[email.message.Message]:
    """Run the jobs once; what they sent."""
    before = len(daemon.sender.transport.sent)
    daemon.sweep()
    daemon.sender.drain()
    return [email.message_from_bytes(raw) for _, _, raw in daemon.sender.transport.sent[before:]]


def deliver(daemon: Daemon, *mails: bytes) -> list[email.message.Message]:
    """Mails in; what inboxd sent in answer out."""
    before = len(daemon.sender.transport.sent)
    daemon.source.add(mails)
    daemon.ingest(daemon.source.open())
    daemon.sender.drain()
    return [email.message_from_bytes(raw) for _, _, raw in daemon.sender.transport.sent[before:]]


def test_a_thousand_mails_in_a_minute_make_a_thousand_items_and_the_team_hears_of_each_in_batches(fake_daemon, clock):
    flood = []
    for i in range(1000):
        flood.append(make_mail("storm@example.org", f"Alert {i}", f"disk {i} full", message_id=f"<storm-{i}@x>"))
    sent = deliver(fake_daemon, *flood)
    assert Item.select().count() == 1000  # nothing lost
    assert [m["To"] for m in sent if m["To"] == "storm@example.org"] == ["storm@example.org"] * 20
    assert len(sent) == 60  # and twenty announcements to each of the queue's two members, one per item
    capped = Event.select().where(Event.kind == "flood-cap")
    assert capped.count() == 980 and "already got 20 in the last 1 hour " in capped.first().detail
    assert Event.select().where(Event.kind == "announcement-held").count() == 980
    assert sorted(fake_daemon.source.done) == list(range(1, 1001))
    batches = sweep(fake_daemon)  # a full batch goes at once; the rest once the oldest waited HELD_BATCH
    clock.advance(HELD_BATCH)
    batches += sweep(fake_daemon)
    assert [m["To"] for m in batches] == ["ana@example.org, bo@example.org"] * 2  # one mail per batch
    listed = [ref for m in batches for ref in re.findall(r"\[(IT-\d+)\]", text_of(m))]
    assert sorted(listed) == sorted(f"IT-{n}" for n in range(21, 1001))  # each held request, once
    assert Event.select().where(Event.kind == "announced").count() == 980 and sweep(fake_daemon) == []
    clock.advance(timedelta(hours=1, minutes=1))  # the window has passed: answered again
    assert [m["To"] for m in deliver(fake_daemon, make_mail("storm@example.org", "One more"))].count(
        "storm@example.org") == 1


def test_two_auto_responders_facing_each_other_stop_within_the_cap(fake_daemon):
    """A responder without Auto-Submitted that answers every mail with a new one, tags stripped, text varied."""
    rounds, mail = 0, make_mail("robot@example.net", "Ticket received", "We got your mail.")
    while mail is not None and rounds < 50:
        rounds += 1
        answers = [m for m in deliver(fake_daemon, mail) if m["To"] == "robot@example.net"]
        mail = make_mail("robot@example.net", "Ticket received", f"We got your mail ({rounds}).") if answers else None
    assert rounds == 21  # twenty acknowledgements, then silence ends the loop
    assert Outbox.select().where(Outbox.recipient == "robot@example.net").count() == 20
    assert Item.select().count() == 21


def test_the_cap_is_configurable(tmp_path, clock):
    daemon = Daemon(load_config(write_config(tmp_path, extra="[limits]\nautomatic_per_sender = 2\n"
                                                               'automatic_window = "1d"\n')),
                    clock=clock, source=FakeSource(), transport=FakeTransport())
    sent = deliver(daemon, *(make_mail("x@example.org", f"Request {i}", f"Text {i}") for i in range(4)))
    assert sum(m["To"] == "x@example.org" for m in sent) == 2


def test_an_item_past_its_bound_holds_its_mail_until_the_window_passes(fake_daemon, clock):
    from conversation_helpers import Conversation, reply
    talk = Conversation(fake_daemon)
    for n in range(40):
        talk.send(reply(talk.ack, "rosa@example.org", f"Any news? ({n})"))
    sent = Outbox.select().where((Outbox.item == talk.item_id) & (Outbox.kind != "mail_held")).count()
    assert 30 <= sent <= 30 + 2  # the round that reaches the bound (a reply to both members) is the last
    assert [m["To"] for m in talk.outbox if m["To"] == "lead@example.org"] == ["lead@example.org"]
    clock.advance(timedelta(hours=1, minutes=1))
    assert "ana@example.org" in [m["To"] for m in talk.send(reply(talk.ack, "rosa@example.org", "Still there?"))]


def _bounce_of(mail: email.message.Message) -> bytes:
    """A delivery status notification for one of our mails, quoting its headers, as MTAs send them."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\nTo: help@example.org\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-1@mx.example.org>\r\n"
        "Return-Path: <>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered: 550 5.1.1 no such user\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
        "Final-Recipient: rfc822; rosa@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: help@example.org\r\nTo: rosa@example.org\r\nMessage-ID: {mail['Message-ID']}\r\n"
        f"Subject: {mail['Subject']}\r\n--b1--\r\n").encode()


def test_a_bounce_of_our_mail_lands_on_its_item_as_a_delivery_failure_and_is_not_answered(fake_daemon):
    from conversation_helpers import Conversation
    talk = Conversation(fake_daemon)
    assert talk.send(_bounce_of(talk.ack)) == []
    (failure,) = talk.events("delivery-failed")
    assert failure.actor == "mailer-daemon@mx.example.org" and "Undelivered Mail" in failure.detail
    assert Item.select().count() == 1


def test_an_owners_out_of_office_lands_on_the_item(fake_daemon):
    from conversation_helpers import Conversation, reply
    talk = Conversation(fake_daemon)
    announcement = talk.last("ana@example.org")
    ooo = reply(announcement, "ana@example.org", "I am away until Monday.", subject="Automatic reply: away",
                headers={"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"})
    assert talk.send(ooo) == []
    (away,) = talk.events("auto-reply")
    assert away.actor == "ana@example.org" and "Auto-Submitted: auto-replied" in away.detail


def test_the_same_text_rule_compares_whole_texts_and_subjects(fake_daemon):
    """Different requests that start alike, or say "see subject", are each acknowledged; a responder is not."""
    banner = "CAUTION: This email originated from outside the organisation. " * 5
    mails = [make_mail("rosa@example.org", "Printer jam", banner + "\n\nThe printer on floor 2 jams."),
             make_mail("rosa@example.org", "VPN down", banner + "\n\nThe VPN drops every hour."),
             make_mail("rosa@example.org", "New mouse please", "See subject.\n\nSent from my iPhone"),
             make_mail("rosa@example.org", "New keyboard please", "See subject.\n\nSent from my iPhone")]
    sent = deliver(fake_daemon, *mails)
    assert sum(m["To"] == "rosa@example.org" for m in sent) == 4
    echo = "I am away until Monday and will read your mail then."
    sent = deliver(fake_daemon, make_mail("robot@example.net", "Re: [IT-9] We have your request", echo),
                   make_mail("robot@example.net", "RE: [IT-10] AW: We have your request", echo))
    assert sum(m["To"] == "robot@example.net" for m in sent) == 1
    (capped,) = Event.select().where(Event.kind == "flood-cap")
    assert "same text as IT-5" in capped.detail


def test_a_flood_of_mail_without_a_sender_is_announced_in_batches(fake_daemon):
    flood = [f"From: undisclosed-recipients:;\r\nTo: help@example.org\r\nSubject: Alert {i}\r\n"
             f"Message-ID: <nosender-{i}@x>\r\n\r\nDisk {i} full.\r\n".encode() for i in range(30)]
    sent = deliver(fake_daemon, *flood)
    assert Item.select().count() == 30
    assert len(sent) == 2 * 20  # twenty announced one by one to each member, the rest held for a batch
    assert Event.select().where(Event.kind == "announcement-held").count() == 10
