"""SMTP faults against a real aiosmtpd: a server down for ten minutes, 4xx, 5xx, refused recipients.

Time runs on the injected clock; the server is really absent, then really there.
"""

from __future__ import annotations

import email
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from helpers import CORPUS, make_mail, write_config

from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.models import Event, Item, Outbox
from inboxd.servers import free_port
from inboxd.source import FakeSource


class Moody:
    """An aiosmtpd handler that refuses some recipients and answers the first DATA commands as told."""

    def __init__(self, refuse: tuple[str, ...] = (), answers: tuple[str, ...] = ()) -> None:
        self.refuse, self.answers = set(refuse), list(answers)
        self.received: list[tuple[tuple[str, ...], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802 (aiosmtpd's hook)
        if address in self.refuse:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.answers:
            return self.answers.pop(0)
        self.received.append((tuple(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


@pytest.fixture
def port() -> int:
    return free_port()


def daemon_on(tmp_path, clock, port: int, retry_seconds: int = 30, extra: str = "") -> Daemon:
    config = write_config(tmp_path, smtp_port=port, extra=extra)
    config.write_text(config.read_text().replace("retry_seconds = 1", f"retry_seconds = {retry_seconds}"))
    return Daemon(load_config(config), clock=clock, source=FakeSource())


def request(daemon: Daemon, *mails: bytes) -> None:
    daemon.source.add(mails)
    daemon.ingest(daemon.source.open())


@contextmanager
def served(handler: Moody, port: int, **options) -> Iterator[Moody]:
    """aiosmtpd listening on the port with this handler, for the `with` block."""
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


def test_a_server_down_for_ten_minutes_gets_every_mail_once_when_it_is_back(tmp_path, clock, port, caplog):
    daemon = daemon_on(tmp_path, clock, port)
    request(daemon, make_mail("rosa@example.org", "Screen flickers"), make_mail("omar@example.org", "VPN"))
    with caplog.at_level(logging.INFO, logger="inboxd"):
        for _ in range(10):  # ten minutes with nobody listening
            daemon.sender.drain()
            clock.advance(timedelta(minutes=1))
        assert Outbox.select().where(Outbox.status == "pending").count() == 5  # 2 acks, 1 assigned, 1 announcement to 2 members
        assert "ConnectionRefused" in Outbox.get(Outbox.attempts > 0).last_error
        # One try per round while the server is away, each mail backing off on its own: no hammering.
        assert sum(o.attempts for o in Outbox.select()) == 10
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and f"SMTP: cannot reach 127.0.0.1:{port}" in errors[0]  # once per outage
        handler = Moody()
        with served(handler, port):
            for _ in range(10):
                daemon.sender.drain()
                clock.advance(timedelta(minutes=1))
            daemon.sender.transport.close()
    assert "is reachable again" in caplog.text
    recipients = sorted(to for to, _ in handler.received)
    assert recipients == [("ana@example.org",), ("ana@example.org",), ("bo@example.org",),  # ops, default queue
                          ("omar@example.org",), ("rosa@example.org",)]
    assert {o.status for o in Outbox.select()} == {"sent"}
    assert all(i.acknowledged_at > i.created_at + timedelta(minutes=9) for i in Item.select())


def test_temporary_refusals_are_retried_then_delivered_once(tmp_path, clock, port):
    handler = Moody(answers=("451 4.3.0 try again later", "421 4.7.0 too busy"))
    with served(handler, port):
        daemon = daemon_on(tmp_path, clock, port)
        request(daemon, make_mail("rosa@example.org", "Screen flickers"))
        for _ in range(6):
            daemon.sender.drain()
            clock.advance(timedelta(minutes=1))
    assert len(handler.received) == 3 and {o.status for o in Outbox.select()} == {"sent"}
    assert sum(o.attempts for o in Outbox.select()) == 5  # the first mail took three tries


def test_a_permanent_refusal_goes_dead_with_the_reason_on_the_item(tmp_path, clock, port):
    handler = Moody(answers=("554 5.7.1 message rejected as spam",))
    with served(handler, port):
        daemon = daemon_on(tmp_path, clock, port)
        request(daemon, make_mail("rosa@example.org", "Screen flickers"))
        daemon.sender.drain()
    dead = Outbox.get(Outbox.status == "dead")
    assert dead.attempts == 1 and "554" in dead.last_error
    event = Event.get(Event.kind == "delivery-failed")
    assert "554" in event.detail and "message rejected as spam" in event.detail


def test_refused_recipients(tmp_path, clock, port):
    handler = Moody(refuse=("rosa@example.org", "bo@example.org"))
    with served(handler, port):
        # Without reply-address proof, team mail goes to all of a queue's members at once: one mail, two recipients.
        daemon = daemon_on(tmp_path, clock, port, extra="[commands]\nrequire_secret = false\n")
        request(daemon, make_mail("rosa@example.org", "Screen flickers"))
        daemon.sender.drain()
        clock.advance(timedelta(hours=2))
        daemon.sender.drain()  # nothing is sent again
    ack = Outbox.get(Outbox.kind == "ack")
    assert ack.status == "dead" and "550" in ack.last_error  # its only recipient: given up
    announcement = Outbox.get(Outbox.kind == "new_request")
    assert announcement.status == "sent" and "refused for bo@example.org: 550" in announcement.last_error
    (to, raw), = handler.received
    assert to == ("ana@example.org",) and email.message_from_bytes(raw)["To"] == "ana@example.org, bo@example.org"
    details = [e.detail for e in Event.select().where(Event.kind == "delivery-failed")]
    assert any("ack to rosa@example.org given up" in d for d in details)
    assert any("new_request not delivered to bo@example.org: 550" in d for d in details)


def test_an_internationalized_address_goes_out_with_smtputf8_or_dies_with_the_reason(tmp_path, clock, port):
    raw = (CORPUS / "encoding" / "mikel__rfc6532_utf8_headers.eml").read_bytes()  # From: jdöe@mächine.example
    handler = Moody()
    with served(handler, port):
        daemon = daemon_on(tmp_path / "utf8", clock, port)
        request(daemon, raw)
        daemon.sender.drain()
    (to, data), = [r for r in handler.received if r[0] == ("jdöe@mächine.example",)]
    assert b"To: jd\xc3\xb6e@m\xc3\xa4chine.example\r\n" in data  # as it is, not an encoded word
    with served(Moody(), port, enable_SMTPUTF8=False):
        daemon = daemon_on(tmp_path / "ascii", clock, port)
        request(daemon, raw)
        daemon.sender.drain()
    dead = Outbox.get(Outbox.kind == "ack")
    assert dead.status == "dead" and "no SMTPUTF8" in dead.last_error
