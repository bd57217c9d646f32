"""The outbox sender: backoff, dead letters, and what a sent acknowledgement records."""

import smtplib
import sqlite3
from datetime import timedelta

import peewee as pw
import pytest
from helpers import make_mail, write_config

from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.errors import DeliveryError, PermanentDeliveryError
from inboxd.models import Event, Item, Outbox
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource


@pytest.fixture
def fake_daemon(tmp_path, clock):
    """A daemon whose items send one mail each, the acknowledgement: no announcement to the queue."""
    config = load_config(write_config(tmp_path, extra="[service]\nannounce_new = false\n"))
    return Daemon(config, clock=clock, source=FakeSource(), transport=FakeTransport())


def _one_request(daemon):
    daemon.source.add([make_mail("rosa@example.org", "Screen flickers")])
    daemon.ingest(daemon.source.open())
    return Item.get()


def test_backoff_grows_and_is_capped(fake_daemon):
    sender = fake_daemon.sender
    waits = [sender.backoff(n).total_seconds() for n in range(1, 15)]
    assert waits[:4] == [1, 2, 4, 8]  # retry_seconds = 1 in the test config
    assert waits == sorted(waits) and max(waits) == 3600


def test_temporary_failure_retries_later_then_sends(fake_daemon, clock):
    item = _one_request(fake_daemon)
    transport = fake_daemon.sender.transport
    transport.failures.append(DeliveryError("451 try later"))
    assert fake_daemon.sender.drain() == 0
    row = Outbox.get()
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "451 try later")
    assert fake_daemon.sender.drain() == 0  # not due yet: nothing is hammered
    clock.advance(timedelta(seconds=2))
    assert fake_daemon.sender.drain() == 1
    assert Outbox.get().status == "sent"
    assert Item.get_by_id(item.id).acknowledged_at == clock.now()


def test_permanent_failure_goes_dead_with_reason_on_the_item(fake_daemon):
    item = _one_request(fake_daemon)
    fake_daemon.sender.transport.failures.append(PermanentDeliveryError("550 no such user"))
    fake_daemon.sender.drain()
    row = Outbox.get()
    assert (row.status, row.last_error) == ("dead", "550 no such user")
    event = Event.get(Event.kind == "delivery-failed")
    assert event.item_id == item.id and "550 no such user" in event.detail
    assert Item.get_by_id(item.id).acknowledged_at is None


def test_gives_up_after_max_attempts(fake_daemon, clock):
    _one_request(fake_daemon)
    transport = fake_daemon.sender.transport
    transport.failures.extend(DeliveryError("421 busy") for _ in range(20))
    for _ in range(12):
        fake_daemon.sender.drain()
        clock.advance(timedelta(hours=2))
    row = Outbox.get()
    assert (row.status, row.attempts) == ("dead", 10)


def test_parallel_connections_share_the_outbox_without_overlap(fake_daemon):
    from inboxd.outbox import FakeTransport, OutboxSender
    fake_daemon.source.add([make_mail(f"u{i}@example.org") for i in range(7)])
    fake_daemon.ingest(fake_daemon.source.open())
    first, second = FakeTransport(), FakeTransport()
    sender = OutboxSender([first, second], fake_daemon.clock, fake_daemon.config.smtp)
    assert sender.drain(0, 2) + sender.drain(1, 2) == 7
    recipients = [to[0] for _, to, _ in first.sent + second.sent]
    assert first.sent and second.sent  # both connections did work
    assert sorted(recipients) == sorted(f"u{i}@example.org" for i in range(7))  # each mail once
    assert Outbox.select().where(Outbox.status == "sent").count() == 7


@pytest.mark.parametrize("exc, kind, unreachable", [
    (ConnectionRefusedError(111, "Connection refused"), "SmtpUnreachable", True),
    (smtplib.SMTPServerDisconnected("gone"), "SmtpUnreachable", True),
    (smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported"), "DeliveryError", False),
    (smtplib.SMTPResponseException(451, b"try later"), "DeliveryError", False),
    (smtplib.SMTPResponseException(550, b"no such user"), "PermanentDeliveryError", False),
])
def test_what_a_failure_means(exc, kind, unreachable):
    from inboxd.outbox import _classify
    error = _classify(exc)
    assert (type(error).__name__, error.unreachable) == (kind, unreachable)


# --- the SMTP window (issue 13, item 9): between the server's 250 and the database's commit ------

class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, nothing catches it."""


def _killed_after_the_250(monkeypatch):
    """The next delivery's record in the database never happens, as if the process died right there."""
    import inboxd.outbox

    def die(*args):
        raise Killed
    monkeypatch.setattr(inboxd.outbox, "_mark_sent", die)


def test_a_mail_the_server_took_is_not_sent_again_after_a_crash_before_the_commit(fake_daemon, clock, monkeypatch,
                                                                                    caplog):
    item = _one_request(fake_daemon)
    with monkeypatch.context() as patch:
        _killed_after_the_250(patch)
        with pytest.raises(Killed):
            fake_daemon.sender.drain()
    assert len(fake_daemon.sender.transport.sent) == 1 and Outbox.get().status == "pending"  # taken, not recorded
    restarted = Daemon(fake_daemon.config, clock=clock, source=FakeSource(), transport=FakeTransport())
    assert restarted.sender.drain() == 0
    assert restarted.sender.transport.sent == []  # not a second acknowledgement
    assert Outbox.get().status == "sent" and Item.get_by_id(item.id).acknowledged_at == clock.now()
    assert "1 mail(s) the SMTP server took before the last stop" in caplog.text


def test_a_record_the_database_refused_is_written_later_without_sending_again(fake_daemon, monkeypatch):
    _one_request(fake_daemon)
    with monkeypatch.context() as patch:
        _killed_after_the_250(patch)
        with pytest.raises(Killed):
            fake_daemon.sender.drain()
    assert fake_daemon.sender.drain() == 1  # recorded now, in the same process
    assert len(fake_daemon.sender.transport.sent) == 1 and Outbox.get().status == "sent"


def test_the_last_sending_at_stop_with_the_database_locked_leaves_the_record_to_the_next_start(
        fake_daemon, clock, monkeypatch, caplog):
    import inboxd.outbox

    def locked(*args):
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as exc:
            raise pw.OperationalError("database is locked") from exc
    _one_request(fake_daemon)
    fake_daemon.sender.stopping.set()  # as at the stop: a record the database refuses is not waited for
    with monkeypatch.context() as patch:
        patch.setattr(inboxd.outbox, "_mark_sent", locked)
        assert fake_daemon.sender.last_drain() == 0  # no traceback: a warning
    assert "stopping with the database unavailable (database is locked)" in caplog.text
    taken = len(fake_daemon.sender.transport.sent)
    assert taken and Outbox.get_by_id(1).status == "pending"
    restarted = Daemon(fake_daemon.config, clock=clock, source=FakeSource(), transport=FakeTransport())
    restarted.sender.drain()
    assert taken + len(restarted.sender.transport.sent) == Outbox.select().count()  # none sent twice
    assert {row.status for row in Outbox.select()} == {"sent"}


def test_the_sent_log_is_read_by_message_id_and_emptied_at_start(fake_daemon, clock):
    _one_request(fake_daemon)
    log = fake_daemon.sender.sent_log
    log.path.write_text('["<old-ack@example.org>", ""]\nnot json\n')  # left beside a database since replaced
    assert fake_daemon.sender.drain() == 1  # the pending ack is not mistaken for a sent one
    assert log.path.read_text() == f'["{Outbox.get().message_id}", "", "{clock.now().isoformat()}"]\n'  # noted
    assert log.unrecorded == {}


def test_on_dovecot_and_aiosmtpd_a_crash_after_the_250_sends_no_second_acknowledgement(
        tmp_path, clock, mailbox, smtp_capture, monkeypatch):
    from inboxd.servers import append_messages
    config = load_config(write_config(tmp_path, imap_port=mailbox.port, smtp_port=smtp_capture.port,
                                      imap_user=mailbox.user, imap_password=mailbox.password,
                                      extra="[service]\nannounce_new = false\n"))
    append_messages(mailbox, [make_mail("rosa@example.org", "Screen flickers")])
    first = Daemon(config, clock=clock)
    first.ingest(first.source.open())  # the item is committed, the mail moved to Processed
    first.source.close()
    with monkeypatch.context() as patch:
        _killed_after_the_250(patch)
        with pytest.raises(Killed):
            first.sender.drain()  # aiosmtpd said 250; the process "dies" before the commit
    assert len(smtp_capture.messages) == 1 and Outbox.get().status == "pending"
    Daemon(config, clock=clock).once()  # the next start
    assert len(smtp_capture.messages) == 1  # the acknowledgement went out once
    assert Outbox.get().status == "sent" and Item.get().acknowledged_at == clock.now()


def test_a_sent_log_that_cannot_be_written_costs_a_warning_not_a_second_delivery(fake_daemon, caplog):
    """A full or read-only disk under the log: each mail still goes once, and the database records it."""
    _one_request(fake_daemon)
    log = fake_daemon.sender.sent_log
    log.path.unlink(missing_ok=True)
    log.path.mkdir()  # where the log's file should be, something that cannot be opened for writing
    try:
        sent = fake_daemon.sender.drain()
        assert sent == len(fake_daemon.sender.transport.sent) and sent >= 1
        assert fake_daemon.sender.drain() == 0 and len(fake_daemon.sender.transport.sent) == sent  # never again
        assert Outbox.select().where(Outbox.status == "sent").count() == sent
        assert caplog.text.count("cannot be written") == 1  # said once
    finally:
        log.path.rmdir()


def test_a_mail_recorded_from_the_sent_log_after_a_long_stop_counts_when_it_left(fake_daemon, clock):
    """The requester heard at the 250, not at the next start days later: no silence, acknowledged in time."""
    from inboxd.models import Silence
    _one_request(fake_daemon)
    ack = Outbox.get()
    left = clock.now()
    fake_daemon.sender.sent_log.note(ack.message_id, "", left)  # the server took it; the process died
    clock.advance(timedelta(days=6))  # and was started again a week later
    restarted = Daemon(fake_daemon.config, clock=clock, source=FakeSource(), transport=FakeTransport())
    restarted.sender.drain()
    assert restarted.sender.transport.sent == []  # not sent twice
    item = Item.get()
    assert Outbox.get().sent_at == left and item.acknowledged_at == left and item.acknowledged_quickly
    assert item.heard_at == left and Silence.select().count() == 0
