"""A busy, locked or full database is an outage to wait out: intake pauses, health says so, nothing is parked.

The faults are real: another process holds SQLite's write lock (BEGIN EXCLUSIVE) for longer than
the busy timeout; the database's disk (a tmpfs of its own) is filled, then freed; PostgreSQL cuts
every connection and lets no new one in, then does again. The daemon runs
in a thread of this process on the real IMAP server (Dovecot in CI) and sends to an SMTP capture;
the busy timeout and the retry backoff are shortened so that a lock of many busy timeouts takes
seconds. The pure parts (which errors are an outage, what `inboxd health` says) are unit tests.
"""

from __future__ import annotations

import email
import fcntl
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import peewee as pw
import psycopg2
import pytest
from click.testing import CliRunner
from helpers import make_mail, wait_for, write_config
from postgres import server_for_tests

import inboxd.daemon as daemon_module
import inboxd.pipeline as pipeline_module
from inboxd import health, models
from inboxd.cli import cli
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.errors import DatabaseOutage, InboxdError, SourceError
from inboxd.leases import RowLeases
from inboxd.models import Item, Message, Outbox
from inboxd.outbox import FakeTransport
from inboxd.servers import HOST, append_messages
from inboxd.source import FakeSource
from inboxd.workers import lease_name

REQUESTER = "rosa@example.org"


# --- which errors are an outage ------------------------------------------------------------------

def wrapped(driver: Exception, kind: type[pw.PeeweeException] = pw.OperationalError) -> pw.PeeweeException:
    """The driver's error as peewee raises it (peewee keeps the original as `orig`)."""
    return kind(driver, *driver.args)


@pytest.mark.parametrize("error", [
    wrapped(sqlite3.OperationalError("database is locked")),
    wrapped(sqlite3.OperationalError("database table is locked")),
    wrapped(sqlite3.OperationalError("database or disk is full")),
    wrapped(sqlite3.OperationalError("disk I/O error")),
    wrapped(sqlite3.OperationalError("unable to open database file")),
    wrapped(psycopg2.OperationalError("server closed the connection unexpectedly")),
    wrapped(psycopg2.errors.DiskFull("could not extend file: No space left on device")),
    wrapped(psycopg2.errors.AdminShutdown("terminating connection due to administrator command")),
    wrapped(psycopg2.InterfaceError("connection already closed"), pw.InterfaceError),
])
def test_an_unavailable_database_is_an_outage(error):
    assert models.outage(error)


@pytest.mark.parametrize("error", [
    wrapped(sqlite3.IntegrityError("UNIQUE constraint failed: message.message_id"), pw.IntegrityError),
    wrapped(sqlite3.InterfaceError("Error binding parameter 1: type 'dict' is not supported"), pw.InterfaceError),
    wrapped(sqlite3.OperationalError("no such table: item")),
    wrapped(sqlite3.DataError("string or blob too big"), pw.DataError),
    wrapped(psycopg2.errors.UniqueViolation("duplicate key value"), pw.IntegrityError),
    wrapped(psycopg2.errors.StringDataRightTruncation("value too long for type character varying(255)"),
            pw.DataError),
    pw.OperationalError("Attempting to close database while transaction is open."),  # peewee's own, no driver
])
def test_an_error_of_the_data_is_no_outage(error):
    assert models.outage(error) is None


def test_a_failed_rollback_after_a_full_disk_is_still_the_full_disk():
    """SQLite rolls back by itself on a full disk; peewee's rollback then fails, hiding the cause."""
    try:
        try:
            raise wrapped(sqlite3.OperationalError("database or disk is full"))
        except pw.OperationalError:
            raise wrapped(sqlite3.OperationalError("cannot rollback - no transaction is active")) from None
    except pw.OperationalError as exc:
        assert models.outage(exc) == "database or disk is full"


def test_a_write_turn_held_too_long_by_another_process_is_an_outage(tmp_path, monkeypatch):
    """A delivery process stopped (SIGSTOP) in the middle of a write: the intake says so, not hangs for good."""
    models.open_database(f"sqlite:///{tmp_path}/inboxd.db")
    monkeypatch.setattr(models, "BUSY_TIMEOUT_SECONDS", 0.2)
    other = os.open(tmp_path / "inboxd.db.turn", os.O_RDWR)  # an open file of its own: another holder
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        with pytest.raises(DatabaseOutage, match="held its write turn for 0 s"), models.write_transaction():
            pass
    finally:
        os.close(other)  # let go: the turn is free again
    with models.write_transaction():
        Item.select().count()


# --- what `inboxd health` says -------------------------------------------------------------------

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def status(state: str, age_seconds: float = 10, reason: str = "", read_seconds: float | None = 10) -> health.Status:
    written = (NOW - timedelta(seconds=age_seconds)).isoformat()
    read = (NOW - timedelta(seconds=read_seconds)).isoformat() if read_seconds is not None else None
    return health.Status(state, reason, "2026-11-30T07:00:00+00:00", written, read, 4242)


@pytest.mark.parametrize("found, healthy, says", [
    (status("ok"), True, "ok since 2026-11-30T07:00:00+00:00"),
    (status("paused", reason="database unavailable: database is locked"), False,
     "paused since 2026-11-30T07:00:00+00:00: database unavailable: database is locked"),
    (status("ok", age_seconds=health.STALE_SECONDS + 1), False, "stale: inboxd (pid 4242) last reported 301 s ago"),
    (status("stopped"), False, "stopped: inboxd (pid 4242) stopped at"),
    (status("ok", read_seconds=health.STALE_SECONDS + 1), False, "not reading mail: the mailbox was last read 301 s"),
    (status("ok", read_seconds=None), False, "not reading mail: the mailbox was last read never"),
    (None, False, "unknown: no readable status in"),
])
def test_health_is_ok_only_when_ok_and_fresh(found, healthy, says, tmp_path):
    ok, line = health.verdict(found, tmp_path / "h.json", NOW)
    assert ok is healthy and line.startswith(says)


def test_the_health_file_is_replaced_whole_and_read_back(tmp_path):
    path = tmp_path / "state" / "h.json"
    state = health.Health(path)
    assert state.pause("database unavailable: database is locked") and not state.pause("still locked")
    assert health.read(path).state == "paused" and not list(path.parent.glob("*.tmp"))
    assert state.ok() and health.read(path).state == "ok"
    assert not state.ok()  # no change: no news


@pytest.mark.parametrize("updated", ["yesterday", "2026-11-30T08:00:00", None, 12])
def test_a_health_file_written_by_something_else_is_unknown_not_a_traceback(tmp_path, updated):
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"state": "ok", "reason": "", "since": "2026-11-30T08:00:00+00:00",
                                "updated": updated, "last_imap": None, "pid": 1}))
    assert health.read(path) is None
    ok, line = health.verdict(None, path, datetime.now(UTC))
    assert not ok and line.startswith("unknown: no readable status")


def test_health_command_exit_codes(tmp_path):
    config = load_config(write_config(tmp_path))
    path = health.status_file(config)
    assert path.parent == tmp_path  # beside the SQLite database by default
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(config.path), "health"])
    assert result.exit_code == 1 and "unknown: no readable status" in result.output
    health.Health(path).pause("database unavailable: database or disk is full")
    result = runner.invoke(cli, ["--config", str(config.path), "health"])
    assert result.exit_code == 1 and "paused since" in result.output and "disk is full" in result.output
    health.Health(path).imap_seen()
    result = runner.invoke(cli, ["--config", str(config.path), "health"])
    assert result.exit_code == 1 and "database unreachable" in result.output  # no database yet: none is made
    assert runner.invoke(cli, ["--config", str(config.path), "migrate"]).exit_code == 0
    result = runner.invoke(cli, ["--config", str(config.path), "health", "--json"])
    assert result.exit_code == 0 and '"healthy": true' in result.output and '"state": "ok"' in result.output


class Unreachable(FakeSource):
    """An IMAP server that is never there."""

    def open(self) -> int:
        raise SourceError("IMAP: cannot connect to 127.0.0.1:1 (none): ConnectionRefusedError")


def test_health_is_red_while_the_mailbox_cannot_be_read(tmp_path, clock):
    daemon = Daemon(load_config(write_config(tmp_path)), clock=clock, source=Unreachable(), transport=FakeTransport())
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: health.read(daemon.health.path) is not None, "health written")
        ok, line = health.verdict(health.read(daemon.health.path), daemon.health.path, datetime.now(UTC))
        assert not ok and line.startswith("not reading mail: the mailbox was last read never")
    finally:
        daemon.stop()
        thread.join(10)


# --- the pipeline on fakes: an outage is raised, never parked --------------------------------------

def lock(database: Path) -> sqlite3.Connection:
    """What another process does: hold SQLite's write lock (until the connection is closed).

    Taking it waits a little, as any other process would: a daemon that has just started may be
    writing for a moment (its delivery process opening the database), and the test is about what
    comes after.
    """
    other = sqlite3.connect(database, timeout=5, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    return other


@contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """The database locked by another connection until the block ends."""
    other = lock(database)
    try:
        yield
    finally:
        other.close()


@pytest.fixture
def short_waits(monkeypatch):
    """Busy timeout and retry backoff of a fraction of a second: a lock of many busy timeouts takes seconds."""
    monkeypatch.setattr(models, "BUSY_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(daemon_module, "DATABASE_RETRY_SECONDS", 0.3)


def test_the_pipeline_raises_an_outage_and_parks_nothing(tmp_path, short_waits, clock, monkeypatch):
    """The lock ends just after the mail's transaction gave up: a parked record could be written, and is not."""
    config = load_config(write_config(tmp_path))
    daemon = Daemon(config, clock=clock, source=FakeSource(), transport=FakeTransport())
    tried = []

    @contextmanager
    def locked_the_first_time() -> Iterator[None]:
        with write_locked(tmp_path / "inboxd.db") if not tried else nullcontext():
            tried.append(1)
            with models.write_transaction():
                yield
    monkeypatch.setattr(pipeline_module, "write_transaction", locked_the_first_time)
    with pytest.raises(DatabaseOutage, match="database is locked"):
        daemon.pipeline.process(make_mail(message_id="<locked@example.org>"), 1)
    assert tried == [1] and Message.select().count() == 0  # not parked
    assert daemon.pipeline.process(make_mail(message_id="<locked@example.org>"), 1).kind == "item"


def test_the_sweep_stops_at_an_outage_with_one_warning(tmp_path, short_waits, clock, caplog):
    daemon = Daemon(load_config(write_config(tmp_path)), clock=clock, source=FakeSource(), transport=FakeTransport())
    daemon.source.add([make_mail(), make_mail(subject="Keyboard sticks")])
    daemon.ingest(daemon.source.open())
    clock.advance(timedelta(days=7))  # reminders, notices and escalations for both items are due
    with caplog.at_level(logging.INFO), write_locked(tmp_path / "inboxd.db"):
        assert daemon.sweep() == [] and daemon.sweep() == []
    assert [r.levelname for r in caplog.records if r.name.startswith("inboxd")] == ["WARNING"]
    assert "sweep: database unavailable: database is locked" in caplog.text
    assert len(daemon.sweep()) >= 4  # each job once, now


class Releasing:
    """The outbox's stop event, standing in: each wait for the database ends the other process's lock."""

    def __init__(self, held: list[sqlite3.Connection]) -> None:
        self.held, self.waits = held, 0

    def is_set(self) -> bool:
        return False

    def wait(self, seconds: float) -> bool:
        self.waits += 1
        self.held[0].close()
        return False


def test_a_delivery_waits_for_the_database_to_be_recorded_rather_than_go_twice(tmp_path, short_waits, clock):
    sent = FakeTransport()
    daemon = Daemon(load_config(write_config(tmp_path)), clock=clock, source=FakeSource(), transport=sent)
    daemon.source.add([make_mail()])
    daemon.ingest(daemon.source.open())
    held: list[sqlite3.Connection] = []

    def send_then_lock(sender: str, recipients: list[str], raw: bytes) -> dict[str, str]:
        if not held:  # another process takes the lock while the SMTP server takes the first mail
            held.append(lock(tmp_path / "inboxd.db"))
        return FakeTransport.send(sent, sender, recipients, raw)
    sent.send = send_then_lock
    daemon.sender.stopping = releasing = Releasing(held)
    queued = Outbox.select().count()
    assert daemon.sender.drain() == queued and releasing.waits == 1
    assert len(sent.sent) == queued and Outbox.select().where(Outbox.status == "sent").count() == queued


def test_once_gives_up_after_its_patience_and_leaves_the_mail(tmp_path, short_waits, clock, monkeypatch):
    monkeypatch.setattr(daemon_module, "ONCE_PATIENCE_SECONDS", 1.0)
    source = FakeSource()
    source.add([make_mail()])
    daemon = Daemon(load_config(write_config(tmp_path)), clock=clock, source=source, transport=FakeTransport())
    with write_locked(tmp_path / "inboxd.db"), pytest.raises(DatabaseOutage, match="gave up after waiting"):
        daemon.once()
    assert source.mails and not source.done and not source.aside
    assert Message.select().count() == 0


# --- the daemon on the real IMAP server ----------------------------------------------------------

def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    wait_for(check, what, timeout, every=0.05)


class Running:
    """`inboxd run` in a thread of this process, on a real mailbox and SMTP capture."""

    def __init__(self, tmp_path: Path, mailbox, smtp, url: str = "sqlite:///inboxd.db") -> None:
        path = write_config(tmp_path, imap_port=mailbox.port, smtp_port=smtp.port, imap_user=mailbox.user,
                            imap_password=mailbox.password)
        text = path.read_text().replace('"sqlite:///inboxd.db"', f'"{url}"')
        path.write_text(text.replace("[paths]\n", '[paths]\nstate = "state"\n'))
        self.config = load_config(path)
        self.database = Path(self.config.database_url.removeprefix("sqlite:///"))
        self.mailbox, self.smtp = mailbox, smtp
        self.daemon = Daemon(self.config)
        self.tries = 0  # ingest calls, failed or not
        ingest = self.daemon.ingest

        def counted(*args, **kwargs) -> int:
            self.tries += 1
            return ingest(*args, **kwargs)
        self.daemon.ingest = counted
        self.thread = threading.Thread(target=self.daemon.run, name="daemon", daemon=True)
        # On PostgreSQL `inboxd run` is a worker holding the mailbox's lease, and `health` asks the leases first:
        # this process holds it (for the test's length), so its status file speaks.
        self.lease = RowLeases(url, holder=f"{socket.gethostname()}:{os.getpid()}:tests", ttl=600) \
            if url.startswith("postgres") else None

    def __enter__(self) -> Running:
        if self.lease is not None:
            assert self.lease.take([lease_name(self.config)], most=1)
        self.thread.start()
        wait_until(lambda: self.health().state == "ok" and self.health().last_imap is not None, "running")
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop()
        self.thread.join(30)
        if self.lease is not None:
            self.lease.close()

    def health(self) -> health.Status:
        return health.read(health.status_file(self.config)) or health.Status("none", "", "", "", None, 0)

    def health_command(self) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["--config", str(self.config.path), "health"])
        return result.exit_code, result.output

    def acks(self) -> list[email.message.Message]:
        mails = [email.message_from_bytes(m.data) for m in self.smtp.messages]
        return [m for m in mails if m["To"] == REQUESTER and "We have your request" in m["Subject"]]

    def folder(self, name: str) -> int:
        with self.mailbox.connect() as client:
            return client.folder_status(name, [b"MESSAGES"])[b"MESSAGES"] if client.folder_exists(name) else 0

    def while_paused(self, tries: int) -> None:
        """Wait until intake is paused and has tried again `tries` more times (each a busy timeout or a write)."""
        wait_until(lambda: self.health().state == "paused", "paused")
        seen = self.tries
        wait_until(lambda: self.tries >= seen + tries, f"{tries} more tries")

    def nothing_happened(self) -> None:
        """Still running, nothing parked, no item, the mail still waiting in the inbox."""
        assert self.thread.is_alive()
        assert Message.select().where(Message.outcome == "parked").count() == 0
        assert Item.select().count() == 0 and not self.acks()
        assert self.folder("INBOX") == 1
        code, line = self.health_command()
        assert code == 1 and line.startswith("paused since") and "database unavailable" in line

    def processed_once(self) -> None:
        """After the outage: one item, one acknowledgement, the mail done, health ok."""
        wait_until(lambda: len(self.acks()) == 1 and self.folder("Processed") == 1, "acknowledged")
        assert Item.select().count() == 1 and len(self.acks()) == 1
        assert Message.select().where((Message.direction == "in") & (Message.outcome == "parked")).count() == 0
        assert self.folder("INBOX") == 0
        wait_until(lambda: self.health().state == "ok", "ok again")
        assert self.health_command()[0] == 0


def one_line_each(caplog, what: str) -> None:
    """The outage was said once when it began and once when it cleared, at no level above WARNING."""
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("inboxd")]
    assert sum("intake paused, retrying" in line for line in lines) == 1, lines
    assert sum("intake resumed" in line for line in lines) == 1, lines
    assert any(what in line for line in lines if "intake paused" in line)
    assert not [r for r in caplog.records if r.levelno > logging.WARNING]


def test_a_lock_longer_than_the_busy_timeout_pauses_intake_and_loses_nothing(
        tmp_path, mailbox, smtp_capture, short_waits, caplog):
    caplog.set_level(logging.INFO)
    with Running(tmp_path, mailbox, smtp_capture) as room:
        with write_locked(room.database):
            append_messages(mailbox, [make_mail(f"Rosa <{REQUESTER}>", "Printer jammed", "Please help.")])
            room.while_paused(tries=5)  # the lock outlasts the busy timeout five times over
            room.nothing_happened()
        room.processed_once()
    one_line_each(caplog, "database is locked")


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 4 MB tmpfs of the test's own for the database (needs root, as Dovecot does)."""
    folder = tmp_path / "db"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Fill the disk to the last byte with one file; remove it to free the disk."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:  # ENOSPC; then the last few bytes, one at a time
        try:
            while os.write(fd, b"\0"):
                pass
        except OSError:
            pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_pauses_intake_and_it_resumes_when_freed(tmp_path, small_disk, mailbox, smtp_capture,
                                                              short_waits, caplog):
    caplog.set_level(logging.INFO)
    with Running(tmp_path, mailbox, smtp_capture, url="sqlite:///db/inboxd.db") as room:
        filler = fill(small_disk)
        append_messages(mailbox, [make_mail(f"Rosa <{REQUESTER}>", "Printer jammed", "Please help.")])
        room.while_paused(tries=3)
        room.nothing_happened()
        filler.unlink()
        room.processed_once()
    one_line_each(caplog, "database or disk is full")


def test_once_waits_out_a_short_lock(tmp_path, mailbox, smtp_capture, short_waits):
    room = Running(tmp_path, mailbox, smtp_capture)  # not started: `once` instead
    append_messages(mailbox, [make_mail(f"Rosa <{REQUESTER}>", "Printer jammed", "Please help.")])
    other = lock(room.database)
    threading.Thread(target=lambda: (wait_until(lambda: room.tries >= 3, "3 tries"), other.close())).start()
    assert room.daemon.once() == 1
    assert room.tries >= 3  # two tries or more waited for the lock
    assert Item.select().count() == 1 and len(room.acks()) == 1
    assert Message.select().where(Message.outcome == "parked").count() == 0
    assert room.folder("INBOX") == 0 and room.health().state == "stopped"


@pytest.fixture
def postgres():
    with server_for_tests() as server:
        yield server


def test_postgres_gone_mid_run_pauses_intake_and_loses_nothing(tmp_path, postgres, mailbox, smtp_capture,
                                                               short_waits, caplog):
    caplog.set_level(logging.INFO)
    admin = psycopg2.connect(host=HOST, port=postgres.port, user=postgres.user, dbname="postgres")
    admin.autocommit = True
    with Running(tmp_path, mailbox, smtp_capture, url=postgres.create_database("inboxd_outage")) as room:
        with admin.cursor() as sql:  # as good as the server gone: every connection cut, no new one let in
            sql.execute("ALTER DATABASE inboxd_outage ALLOW_CONNECTIONS false")
            sql.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'inboxd_outage'")
        append_messages(mailbox, [make_mail(f"Rosa <{REQUESTER}>", "Printer jammed", "Please help.")])
        room.while_paused(tries=3)
        assert room.thread.is_alive() and not room.acks() and room.folder("INBOX") == 1
        code, line = room.health_command()
        assert code == 1 and line.startswith("paused since") and "database unavailable" in line
        with admin.cursor() as sql:
            sql.execute("ALTER DATABASE inboxd_outage ALLOW_CONNECTIONS true")
        models.forget_connection()  # this thread's own connection was cut too
        room.processed_once()
    one_line_each(caplog, "database unavailable")


@pytest.mark.slow
def test_inboxd_run_survives_a_sixty_second_lock_with_its_defaults(tmp_path, mailbox, smtp_capture):
    """The issue's case as it was met: `inboxd run`, its 30 s busy timeout, another process locking for 60 s."""
    config = write_config(tmp_path, imap_port=mailbox.port, smtp_port=smtp_capture.port, imap_user=mailbox.user,
                          imap_password=mailbox.password)
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "inboxd.cli", "--config", str(config), "run"],
                                  stdout=out, stderr=out)
    try:
        wait_until(lambda: "watching with" in log.read_text(), "started")
        other = lock(tmp_path / "inboxd.db")
        locked = time.monotonic()
        append_messages(mailbox, [make_mail(f"Rosa <{REQUESTER}>", "Printer jammed", "Please help.")])
        wait_until(lambda: "intake paused" in log.read_text(), "paused", timeout=60)
        status = health.read(health.status_file(load_config(config)))
        assert status is not None and status.state == "paused" and "locked" in status.reason
        while time.monotonic() - locked < 60:
            assert daemon.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        other.close()
        wait_until(lambda: len(smtp_capture.messages) >= 2, "acknowledged", timeout=60)  # ack and assignment
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, log.read_text()[-3000:]
    with sqlite3.connect(tmp_path / "inboxd.db") as db:
        assert db.execute("select count(*) from item").fetchone()[0] == 1
        assert db.execute("select count(*) from message where outcome = 'parked'").fetchone()[0] == 0
        assert db.execute("select count(*) from outbox where kind = 'ack' and status = 'sent'").fetchone()[0] == 1
    text = log.read_text()
    assert text.count("intake paused") == 1 and text.count("intake resumed") == 1, text[-3000:]
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]


def test_run_waits_out_a_database_locked_at_its_start_and_a_wrong_path_fails_at_once(tmp_path, short_waits, clock,
                                                                                     caplog):
    config = load_config(write_config(tmp_path))
    Daemon(config, clock=clock, source=FakeSource(), transport=FakeTransport())  # the database exists
    models.db.close()
    other = lock(tmp_path / "inboxd.db")
    threading.Timer(1.5, other.close).start()  # a backup holding the lock for a moment
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="inboxd.daemon"):
        daemon = daemon_module.start_patiently(
            lambda: Daemon(config, clock=clock, source=FakeSource(), transport=FakeTransport()))
    assert isinstance(daemon, Daemon) and time.monotonic() - started >= 1.0
    waits = [r.getMessage() for r in caplog.records if "database unavailable at start" in r.getMessage()]
    assert len(waits) == 1 and "locked" in waits[0]
    path = write_config(tmp_path / "other")
    path.write_text(path.read_text().replace('url = "sqlite:///inboxd.db"', 'url = "sqlite:///no/such/dir/x.db"'))
    broken = load_config(path)
    with pytest.raises(InboxdError, match="no/such/dir does not exist"):
        daemon_module.start_patiently(lambda: Daemon(broken, clock=clock, source=FakeSource(),
                                                     transport=FakeTransport()))
