"""Loops and floods: a per-sender cap on automatic mail; a flood still becomes items, nothing is lost."""

from __future__ import annotations

import email
from datetime import timedelta

from helpers import make_mail, write_config

from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.models import Event, Item, Outbox
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource


def deliver(daemon: Daemon, *mails: bytes) -> list[email.message.Message]:
    """Mails in; what inboxd sent in answer out."""
    before = len(daemon.sender.transport.sent)
    daemon.source.add(mails)
    daemon.ingest(daemon.source.open())
    daemon.sender.drain()
    return [email.message_from_bytes(raw) for _, _, raw in daemon.sender.transport.sent[before:]]


def test_a_thousand_mails_in_a_minute_make_a_thousand_items_and_five_acknowledgements(fake_daemon, clock):
    flood = []
    for i in range(1000):
        flood.append(make_mail("storm@example.org", f"Alert {i}", f"disk {i} full", message_id=f"<storm-{i}@x>"))
    sent = deliver(fake_daemon, *flood)
    assert Item.select().count() == 1000  # nothing lost
    assert [m["To"] for m in sent if m["To"] == "storm@example.org"] == ["storm@example.org"] * 5
    assert len(sent) == 10  # and five announcements to the queue: the team is not flooded either
    capped = Event.select().where(Event.kind == "flood-cap")
    assert capped.count() == 995 and "already got 5 in the last 1 hour " in capped.first().detail
    assert sorted(fake_daemon.source.done) == list(range(1, 1001))
    clock.advance(timedelta(hours=1, minutes=1))  # the window has passed: answered again
    assert [m["To"] for m in deliver(fake_daemon, make_mail("storm@example.org", "One more"))].count(
        "storm@example.org") == 1


def test_two_auto_responders_facing_each_other_stop_within_the_cap(fake_daemon):
    """A responder without Auto-Submitted that answers every mail with a new one, tags stripped."""
    rounds, mail = 0, make_mail("robot@example.net", "Ticket received", "We got your mail.")
    while mail is not None and rounds < 50:
        rounds += 1
        answers = [m for m in deliver(fake_daemon, mail) if m["To"] == "robot@example.net"]
        mail = make_mail("robot@example.net", "Ticket received", f"We got your mail ({rounds}).") if answers else None
    assert rounds == 6  # five acknowledgements, then silence ends the loop
    assert Outbox.select().where(Outbox.recipient == "robot@example.net").count() == 5
    assert Item.select().count() == 6


def test_the_cap_is_configurable(tmp_path, clock):
    daemon = Daemon(load_config(write_config(tmp_path, extra="[limits]\nautomatic_per_sender = 2\n"
                                                               'automatic_window = "1d"\n')),
                    clock=clock, source=FakeSource(), transport=FakeTransport())
    sent = deliver(daemon, *(make_mail("x@example.org", f"Request {i}") for i in range(4)))
    assert sum(m["To"] == "x@example.org" for m in sent) == 2
