"""The outbox on PostgreSQL: each mail claimed under a row lock (FOR UPDATE SKIP LOCKED), so that any number of
senders drain it at once and none sends a mail twice; a worker's one delivery process sends every team's mail,
with each team's SMTP, whether or not it holds that team's mailbox lease."""

from __future__ import annotations

import asyncio
import email
import logging
import multiprocessing
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import psycopg2
import pytest
from inboxd.clock import FixedClock, SystemClock
from inboxd.config import Config, load_teams
from inboxd.daemon import Daemon
from inboxd.delivery import ProcessDelivery, sender_session
from inboxd.leases import Board, FakeLeases
from inboxd.mailout import OutgoingMail
from inboxd.errors import DatabaseOutage
from inboxd.models import (
    Outbox,
    connect_database,
    db,
    forget_connection,
    open_database,
    use_team,
    write_transaction,
)
from inboxd.outbox import Ledger, OutboxSender, SmtpTransport, enqueue
from inboxd.servers import SmtpCapture, free_port
from inboxd.settings import Secret
from inboxd.source import FakeSource
from inboxd.workers import Workers

from helpers import make_mail
from test_workers import teams_config, wait_for

pytestmark = pytest.mark.server  # PostgreSQL and SMTP


class SlowSmtp(SmtpCapture):
    """A capture that takes a moment over each mail, so that every sender is busy while the others claim."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        await asyncio.sleep(0.01)
        return await super().handle_DATA(server, session, envelope)


def deployment(tmp_path: Path, url: str, ports: tuple[int, ...]) -> list[Config]:
    """Teams T1, T2… on one PostgreSQL database, team n's SMTP on ports[n-1]."""
    path = teams_config(tmp_path, count=len(ports), url=url)
    for n, port in enumerate(ports, 1):
        team_file = tmp_path / "teams.d" / f"t{n}.toml"
        team_file.write_text(team_file.read_text() + f"\n[smtp]\nport = {port}\n")
    return list(load_teams(path))


def queue(config: Config, count: int, start: int = 0) -> None:
    """`count` pending mails of this team, from its address."""
    use_team(config.team.key)
    now = datetime.now(UTC)
    with write_transaction():
        for n in range(start, start + count):
            message_id = f"<{config.team.key}.{n}@example.org>"
            raw = f"From: {config.team.address}\r\nTo: p{n}@example.org\r\nMessage-ID: {message_id}\r\n" \
                  f"Subject: note {n}\r\n\r\nHello.\r\n".encode()
            enqueue(OutgoingMail("note", config.team.address, (f"p{n}@example.org",), f"note {n}", message_id, raw),
                    None, now)


def message_ids(capture: SmtpCapture) -> Counter:
    return Counter(email.message_from_bytes(mail.data)["Message-ID"] for mail in capture.messages)


def crew(configs: list[Config]) -> OutboxSender:
    """A sender for every team's mail, each team's sent with its own SMTP (as a worker's delivery has)."""
    senders = {c.team.key: OutboxSender([SmtpTransport(c.smtp)], SystemClock(), c.smtp, c.team) for c in configs}
    return OutboxSender([], SystemClock(), configs[0].smtp, crew=senders)


def drain_apart(path: str, start: multiprocessing.synchronize.Barrier, sent: Connection) -> None:
    """One sender process: its own connection, the others' start awaited, then the outbox drained."""
    configs = load_teams(Path(path))
    connect_database(configs[0].database_url)
    start.wait()
    sent.send(crew(list(configs)).drain())


@pytest.fixture
def smtp() -> Iterator[SlowSmtp]:
    with SlowSmtp() as capture:
        yield capture


def test_two_sender_processes_drain_one_outbox_and_send_every_mail_once(tmp_path, postgres, smtp):
    configs = deployment(tmp_path, postgres.create_database("inboxd_claims_two"), (smtp.port, smtp.port))
    open_database(configs[0].database_url)
    for config in configs:
        queue(config, 150)
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no connection inherited
    start = spawn.Barrier(2)
    pipes = [spawn.Pipe(duplex=False) for _ in range(2)]
    senders = [spawn.Process(target=drain_apart, args=(str(configs[0].path), start, writing))
               for _, writing in pipes]
    for process in senders:
        process.start()
    counts = [reading.recv() for reading, _ in pipes]
    for process in senders:
        process.join()
    assert sum(counts) == 300 and min(counts) > 0, counts  # both sent some, together every mail
    ids = message_ids(smtp)
    assert len(ids) == 300 and set(ids.values()) == {1}  # every mail once
    assert {(row.status, row.attempts) for row in Outbox.select()} == {("sent", 1)}
    assert {(m.mail_from, m.rcpt_tos[0][:1]) for m in smtp.messages} == {("t1@example.org", "p"),
                                                                          ("t2@example.org", "p")}


def test_two_sender_threads_share_the_outbox_each_on_its_own_connection(tmp_path, postgres, smtp):
    configs = deployment(tmp_path, postgres.create_database("inboxd_claims_threads"), (smtp.port, smtp.port))
    open_database(configs[0].database_url)
    for config in configs:
        queue(config, 100)
    start, counts = threading.Barrier(3), []

    def drain() -> None:
        start.wait()
        counts.append(crew(configs).drain())
    threads = [threading.Thread(target=drain) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 200 and min(counts) > 0, counts
    assert len(message_ids(smtp)) == 200 and set(message_ids(smtp).values()) == {1}


def test_a_mail_another_session_holds_is_skipped_and_the_others_go(tmp_path, postgres, smtp):
    configs = deployment(tmp_path, postgres.create_database("inboxd_claims_held"), (smtp.port,))
    open_database(configs[0].database_url)
    queue(configs[0], 5)
    held = Outbox.select().order_by(Outbox.id).first()
    other = psycopg2.connect(configs[0].database_url)  # as a sender that froze mid-send
    other.cursor().execute("SELECT id FROM outbox WHERE id = %s FOR UPDATE", (held.id,))
    sender = OutboxSender([SmtpTransport(configs[0].smtp)], SystemClock(), configs[0].smtp, configs[0].team)
    assert sender.drain() == 4
    assert held.message_id not in message_ids(smtp) and len(message_ids(smtp)) == 4
    assert Outbox.get_by_id(held.id).status == "pending"
    other.rollback()  # its transaction ends (the server ends a frozen one after idle_in_transaction_session_timeout)
    other.close()
    assert sender.drain() == 1
    assert set(message_ids(smtp).values()) == {1} and held.message_id in message_ids(smtp)


def test_the_delivery_sessions_end_a_frozen_transaction_and_watch_the_connection(tmp_path, postgres):
    configs = deployment(tmp_path, postgres.create_database("inboxd_claims_session"), (1025,))
    connect_database(configs[0].database_url, sender_session(configs))
    settings = dict(db.execute_sql("SELECT name, setting FROM pg_settings WHERE name IN ("
                                   "'idle_in_transaction_session_timeout', 'tcp_keepalives_idle')").fetchall())
    assert settings == {"idle_in_transaction_session_timeout": str(10 * configs[0].smtp.timeout_seconds * 1000),
                        "tcp_keepalives_idle": "60"}
    db.close()


def test_reports_go_to_their_teams_ledger_here_and_to_the_log_otherwise(caplog):
    ledgers = {"T1": Ledger()}
    reading, writing = multiprocessing.Pipe(duplex=False)
    writing.send(("T1", "failed", (7, "ack", "421 later", False)))
    writing.send(("T2", "failed", (8, "ack", "421 later", False)))
    writing.send(("T2", "login", ("SMTP: login as 't2' refused", False)))
    writing.close()
    with caplog.at_level(logging.DEBUG, "inboxd.delivery"):
        ProcessDelivery([], ledgers.get)._listen(reading)
    assert ledgers["T1"].undelivered == {7: "421 later"}
    assert "team T2 (served by another worker): failed" in caplog.text
    assert any(r.levelno == logging.WARNING and "team T2: SMTP: login as 't2' refused" in r.message
               for r in caplog.records)


def acked(capture: SmtpCapture) -> set[str]:
    return {to for m in capture.messages for to in m.rcpt_tos if to in ("rosa@example.org", "hugo@example.org")}


class Worker:
    """A worker on FakeLeases over PostgreSQL, with its one delivery process, run in a thread."""

    def __init__(self, configs: list[Config], board: Board, name: str, sources: dict[str, FakeSource]) -> None:
        self.workers = Workers(configs, FakeLeases(board, name), delivery=True, make=lambda config: Daemon(
            config, source=sources[config.team.key], database_open=True))
        self.thread = threading.Thread(target=self.workers.run)
        self.thread.start()

    def stop(self) -> None:
        self.workers.stop()
        self.thread.join()


def test_one_delivery_per_worker_sends_each_teams_mail_with_that_teams_smtp(tmp_path, postgres):
    with SmtpCapture() as first, SmtpCapture() as second:
        configs = deployment(tmp_path, postgres.create_database("inboxd_claims_worker"), (first.port, second.port))
        open_database(configs[0].database_url)
        sources = {config.team.key: FakeSource() for config in configs}
        worker = Worker(configs, Board(), "a", sources)
        try:
            wait_for(lambda: len(worker.workers.ledgers) == 2)  # both teams' daemons run here
            sources["T1"].add([make_mail("rosa@example.org", "Printer jam", to="t1@example.org")])
            sources["T2"].add([make_mail("hugo@example.org", "New badge", to="t2@example.org")])
            wait_for(lambda: acked(first) == {"rosa@example.org"} and acked(second) == {"hugo@example.org"}, 60)
        finally:
            worker.stop()
        assert {m.mail_from for m in first.messages} == {"t1@example.org"}  # the acks and the team's notes
        assert {m.mail_from for m in second.messages} == {"t2@example.org"}
        assert {row.status for row in Outbox.select()} == {"sent"}


def test_a_worker_holding_no_lease_sends_a_teams_pending_mail(tmp_path, postgres, smtp):
    configs = deployment(tmp_path, postgres.create_database("inboxd_claims_idle"), (smtp.port, smtp.port))
    open_database(configs[0].database_url)
    board = Board()
    elsewhere = FakeLeases(board, "elsewhere")  # the worker holding both mailboxes, its delivery down
    elsewhere.announce()
    assert elsewhere.take([f"mailbox:{c.mailbox.label}" for c in configs], 2)
    queue(configs[1], 3)
    worker = Worker(configs, board, "idle", {config.team.key: FakeSource() for config in configs})
    try:
        wait_for(lambda: len(smtp.messages) == 3, 60)
        assert worker.workers.teams == {} and worker.workers.leases.held() == frozenset()
    finally:
        worker.stop()
    assert {m.mail_from for m in smtp.messages} == {"t2@example.org"}
    assert {row.status for row in Outbox.select()} == {"sent"}


def test_a_team_with_a_long_queue_does_not_hold_up_the_others_mail(tmp_path, postgres, smtp):
    configs = deployment(tmp_path, postgres.create_database("inboxd_claims_fair"), (smtp.port, smtp.port))
    open_database(configs[0].database_url)
    queue(configs[0], 60)  # a sweep's reminders of a big team, say
    queue(configs[1], 3)  # then another team's acknowledgements
    assert crew(configs).drain() == 63
    first_six = [email.message_from_bytes(m.data)["From"] for m in smtp.messages[:6]]
    assert first_six == ["t1@example.org", "t2@example.org"] * 3  # the teams take turns


def test_a_team_whose_smtp_server_cannot_be_reached_rests_and_the_others_mail_goes_meanwhile(tmp_path, postgres,
                                                                                              smtp):
    configs = deployment(tmp_path, postgres.create_database("inboxd_claims_down"), (free_port(), smtp.port))
    open_database(configs[0].database_url)
    queue(configs[0], 5)
    sender = crew(configs)
    for round_ in range(3):  # each drain as another mail comes in
        queue(configs[1], 1, start=round_)
        assert sender.drain() == 1
    # its first mail found the server down; the team then waits its retry time (a blackholed server costs every
    # other team the SMTP timeout at each try), instead of being tried again at each drain
    assert sorted(row.attempts for row in Outbox.select().where(Outbox.team == "T1")) == [0, 0, 0, 0, 1]
    assert len(message_ids(smtp)) == 3


class SessionEndsMidSend:
    """The real SMTP transport; while the server takes the first mail, the sender's database session is ended (its
    idle_in_transaction_session_timeout, or a fence that found the worker's row expired)."""

    def __init__(self, transport: SmtpTransport, url: str, pid: int) -> None:
        self.transport, self.url, self.pid = transport, url, pid

    def send(self, sender: str, recipients: list[str], raw: bytes) -> dict[str, str]:
        refused = self.transport.send(sender, recipients, raw)
        if self.pid:
            admin = psycopg2.connect(self.url)
            admin.cursor().execute("SELECT pg_terminate_backend(%s)", (self.pid,))
            admin.close()
            self.pid = 0
        return refused

    def close(self) -> None:
        self.transport.close()


def test_a_mail_the_server_took_whose_record_was_lost_with_the_session_is_not_sent_again_by_that_sender(
        tmp_path, postgres, smtp, caplog):
    configs = deployment(tmp_path, postgres.create_database("inboxd_claims_lost"), (smtp.port,))
    open_database(configs[0].database_url)
    queue(configs[0], 2)
    pid = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    transport = SessionEndsMidSend(SmtpTransport(configs[0].smtp), configs[0].database_url, pid)
    sender = OutboxSender([transport], SystemClock(), configs[0].smtp, configs[0].team)
    with pytest.raises(DatabaseOutage):
        sender.drain()  # the commit fails: the row is pending again
    forget_connection()
    assert any(r.levelno == logging.ERROR and "<T1.0@example.org>" in r.message and "before it was recorded" in r.message
               for r in caplog.records)
    assert sender.drain() == 2  # recorded as sent, and the other mail sent
    assert set(message_ids(smtp).values()) == {1} and len(message_ids(smtp)) == 2
    assert {row.status for row in Outbox.select()} == {"sent"}


def test_a_teams_refused_smtp_login_is_tried_three_times_in_a_row_then_no_more_by_this_delivery(tmp_path, postgres,
                                                                                                 caplog):
    """Every worker's delivery logs in to every team's SMTP: without a stop, each would keep trying wrong
    credentials (a lockout), though the team's daemon stopped after three refusals."""
    with SmtpCapture(login=("t1", "right")) as locked, SmtpCapture() as fine:
        configs = deployment(tmp_path, postgres.create_database("inboxd_claims_refused"), (locked.port, fine.port))
        open_database(configs[0].database_url)
        queue(configs[0], 10)
        clock = FixedClock(datetime.now(UTC) + timedelta(minutes=1))  # the mail queued below is due
        wrong = replace(configs[0].smtp, user="t1", password=Secret("wrong"))
        senders = {"T1": OutboxSender([SmtpTransport(wrong)], clock, wrong, configs[0].team),
                   "T2": OutboxSender([SmtpTransport(configs[1].smtp)], clock, configs[1].smtp, configs[1].team)}
        sender = OutboxSender([], clock, configs[0].smtp, crew=senders)
        for round_ in range(8):  # a day of drains, each with another team's mail
            queue(configs[1], 1, start=round_)
            assert sender.drain() == 1
            clock.advance(timedelta(hours=3))
        assert locked.refused == 3 * 2 and len(fine.messages) == 8  # 3 logins, each PLAIN then LOGIN (smtplib)
        assert sum("T1's SMTP login was refused 3 times in a row" in r.message for r in caplog.records
                   if r.levelno == logging.ERROR) == 1


def test_a_stopping_delivery_sends_for_a_while_then_leaves_the_rest_to_the_others(tmp_path, postgres, smtp,
                                                                                   monkeypatch, caplog):
    """SIGTERM with a backlog: the worker's last drain is bounded (systemd would kill it), and nothing is lost."""
    import inboxd.outbox
    monkeypatch.setattr(inboxd.outbox, "STOP_DRAIN_SECONDS", 0.3)
    configs = deployment(tmp_path, postgres.create_database("inboxd_claims_stop"), (smtp.port,))
    open_database(configs[0].database_url)
    queue(configs[0], 200)  # 10 ms each at the server: 2 s in all
    stopping = crew(configs)
    stopping.stopping.set()
    with caplog.at_level(logging.WARNING, logger="inboxd.outbox"):
        first = stopping.last_drain()
    assert 0 < first < 200 and "the mail still due stays in the outbox" in caplog.text
    assert Outbox.select().where(Outbox.status == "pending").count() == 200 - first
    assert crew(configs).drain() == 200 - first  # another worker's delivery sends the rest
    assert len(message_ids(smtp)) == 200 and set(message_ids(smtp).values()) == {1}
