"""IMAP faults on a real Dovecot of their own: restarted while idling, connections cut mid-fetch,
UIDVALIDITY changed, mail moved or deleted by a person, the done folder deleted. Every mail once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import make_mail, write_config
from imapclient import IMAPClient

from inboxd.servers import DovecotServer, append_messages

INBOXD = [sys.executable, "-m", "inboxd.cli"]


@pytest.fixture
def dovecot():
    """A Dovecot for this test alone: stopping or cutting it disturbs no other test."""
    if not DovecotServer.available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but Dovecot is not available")
        pytest.skip("Dovecot is not installed (bash .ci/run installs it); these faults need a real server")
    with DovecotServer() as server:
        yield server


def config_for(tmp_path: Path, dovecot: DovecotServer, smtp_capture, **kwargs) -> Path:
    return write_config(tmp_path, imap_port=dovecot.port, smtp_port=smtp_capture.port, imap_user=dovecot.user,
                        imap_password=dovecot.password, **kwargs)


def count(config: Path, sql: str) -> int:
    try:
        with sqlite3.connect(config.parent / "inboxd.db") as db:
            return db.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not created yet


def wait_until(check, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    # The log's IMAP and error lines say what went wrong; the many item lines would hide them.
    lines = [line for line in log.read_text().splitlines() if "IMAP" in line or "ERROR" in line] if log else []
    raise AssertionError(f"{what} within {timeout}s" + ("\n" + "\n".join(lines[-40:]) if lines else ""))


def folder(dovecot: DovecotServer, name: str) -> int:
    """How many mails a folder holds; -1 when our own look was cut off by the test's cutter."""
    try:
        with dovecot.connect() as client:
            return client.folder_status(name, [b"MESSAGES"])[b"MESSAGES"] if client.folder_exists(name) else 0
    except (OSError, IMAPClient.Error):
        return -1


def mails(start: int, n: int, size: int = 0) -> list[bytes]:
    filler = "\n" + "0123456789abcdef" * (size // 16)
    return [make_mail(f"user{i}@example.org", f"Request {i}", f"Please help with {i}.{filler}",
                      message_id=f"<fault-{i}@example.org>") for i in range(start, start + n)]


class Daemon:
    """`inboxd run` as a real process, its log in a file."""

    def __init__(self, config: Path) -> None:
        self.log = config.parent / "daemon.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen([*INBOXD, "--config", str(config), "run"], stdout=out, stderr=out)
        wait_until(lambda: "watching with" in self.log.read_text(), 20, "the daemon started", self.log)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0, self.log.read_text()[-3000:]

    def lines(self, word: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if word in line]


def each_mail_once(config: Path, total: int) -> None:
    assert count(config, "select count(*) from item") == total
    assert count(config, "select count(distinct message_id) from message where direction = 'in' and item_id "
                         "is not null") == total
    assert count(config, "select count(*) from outbox where kind = 'ack'") == total


def test_server_restarted_while_idling(tmp_path, dovecot, smtp_capture):
    config = config_for(tmp_path, dovecot, smtp_capture)
    daemon = Daemon(config)
    try:
        append_messages(dovecot, mails(0, 3))
        wait_until(lambda: count(config, "select count(*) from item") == 3, 20, "3 items", daemon.log)
        dovecot.pause()  # the admin restarts the IMAP server while inboxd idles
        time.sleep(5)
        dovecot.resume()
        append_messages(dovecot, mails(3, 3))
        wait_until(lambda: count(config, "select count(*) from item") == 6, 60, "6 items", daemon.log)
        wait_until(lambda: folder(dovecot, "Processed") == 6, 20, "6 in Processed", daemon.log)
    finally:
        daemon.stop()
    each_mail_once(config, 6)
    assert len(daemon.lines("ERROR")) == 1, daemon.log.read_text()[-3000:]  # one line per outage
    assert daemon.lines("reconnected to")


def test_the_connection_cut_in_the_middle_of_a_fetch(tmp_path, dovecot, smtp_capture):
    from tcpproxy import CuttingProxy
    proxy = CuttingProxy(dovecot.port, cut_after=3_000_000)  # in the middle of the second batch's FETCH
    try:
        config = config_for(tmp_path, dovecot, smtp_capture, batch_size=20)
        config.write_text(config.read_text().replace(f"port = {dovecot.port}", f"port = {proxy.port}"))
        append_messages(dovecot, mails(0, 60, size=100_000))
        daemon = Daemon(config)
        try:
            wait_until(lambda: folder(dovecot, "Processed") == 60, 60, "60 in Processed", daemon.log)
        finally:
            daemon.stop()
    finally:
        proxy.close()
    assert proxy.cuts == 1
    # Not an outage: the next connection works, so the cut batch is read mail by mail at once, with no ERROR.
    (warning,) = daemon.lines("WARNING")
    assert "fetching 20 mail(s) failed" in warning and "one by one" in warning
    assert daemon.lines("ERROR") == []
    each_mail_once(config, 60)


@contextmanager
def frozen(process: subprocess.Popen):
    """Hold a process still (SIGSTOP, until every thread of it has stopped), and let it go on after."""
    process.send_signal(signal.SIGSTOP)
    try:
        tasks = Path(f"/proc/{process.pid}/task")
        deadline = time.monotonic() + 10
        while not all(task_state(task) in "tTZX" for task in tasks.iterdir()):
            assert time.monotonic() < deadline, "the daemon did not stop on SIGSTOP"
            time.sleep(0.001)
        yield
    finally:
        process.send_signal(signal.SIGCONT)


def task_state(task: Path) -> str:
    try:
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"  # the thread is gone


def test_sessions_killed_again_and_again_while_working(tmp_path, dovecot, smtp_capture):
    # A session killed while Dovecot hands it from login to imap can leave the socket open with
    # nobody behind it: the command timeout ends that wait, so keep it short here.
    config = config_for(tmp_path, dovecot, smtp_capture, batch_size=20)
    config.write_text(config.read_text().replace("batch_size = 20\n", "batch_size = 20\ntimeout_seconds = 5\n"))
    append_messages(dovecot, mails(0, 120, size=100_000))  # 12 MB: fetching is most of the work
    stop, cuts, failures = threading.Event(), [], []

    def cutter() -> None:
        # Kill the daemon's session in the middle of every batch: read, its items partly committed,
        # not yet moved. On a timer, a busy machine rarely let a batch through between two cuts, and
        # a session killed inside a command (a MOVE) leaves Dovecot's uidlist lock behind for two
        # minutes. Cut on progress instead, with the daemon held still: its session is between two
        # commands, and each batch is cut once, so the daemon always gets through. Nothing else
        # talks IMAP meanwhile, so every session killed is the daemon's.
        batches_cut = set()
        try:
            while not stop.is_set() and (items := count(config, "select count(*) from item")) < 120:
                if items % 20 and items // 20 not in batches_cut:
                    with frozen(daemon.process):
                        items = count(config, "select count(*) from item")
                        if items % 20 and items // 20 not in batches_cut:  # still in the middle of it
                            cuts.append(dovecot.cut_connections())
                            batches_cut.add(items // 20)
                time.sleep(0.01)
        except BaseException as exc:
            failures.append(exc)
            raise

    daemon = Daemon(config)
    thread = threading.Thread(target=cutter, daemon=True)
    thread.start()
    try:
        wait_until(lambda: not thread.is_alive(), 120, "every mail recorded", daemon.log)
        wait_until(lambda: folder(dovecot, "Processed") == 120, 60, "120 in Processed", daemon.log)
    finally:
        stop.set()
        thread.join(timeout=30)
        daemon.stop()
    assert not failures, failures
    assert sum(cuts) >= 2, "the connection was never cut while working"
    # each cut was the daemon's own session, felt once: one reconnection each, and no other outage
    assert len(daemon.lines("reconnected to")) == len(daemon.lines("ERROR")) == sum(cuts), cuts
    each_mail_once(config, 120)
    assert folder(dovecot, "INBOX") == 0


def test_uidvalidity_change_rereads_the_folder_without_doubles(tmp_path, dovecot, smtp_capture):
    config = config_for(tmp_path, dovecot, smtp_capture)
    config.write_text(config.read_text().replace('done_folder = "Processed"\n', ""))  # flagged, kept in INBOX
    append_messages(dovecot, mails(0, 3))
    run_once(config)
    dovecot.pause()  # the mailbox is recreated: Dovecot forgets its UIDs and starts a new UIDVALIDITY
    for index in Path(dovecot._tmp, "home").rglob("dovecot*"):
        index.unlink()
    dovecot.resume()
    append_messages(dovecot, mails(3, 1))
    log = run_once(config)
    assert "UIDVALIDITY changed" in log
    each_mail_once(config, 4)
    assert count(config, "select count(*) from message where outcome = 'item'") == 4


def run_once(config: Path) -> str:
    done = subprocess.run([*INBOXD, "--config", str(config), "once"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_a_person_moving_or_deleting_mail_while_inboxd_works_on_it(tmp_path, dovecot, smtp_capture):
    from inboxd.config import load_config
    from inboxd.daemon import Daemon as InProcess
    from inboxd.source import ImapSource

    class Meddled(ImapSource):
        """Between fetching a batch and marking it done, a person tidies the inbox."""

        def fetch(self, uids, sizes=None):
            fetched = super().fetch(uids, sizes)
            with dovecot.connect() as person:
                person.create_folder("Elsewhere") if not person.folder_exists("Elsewhere") else None
                person.select_folder("INBOX")
                person.move([uids[0]], "Elsewhere")
                person.delete_messages([uids[1]])
                person.expunge()
            return fetched

    config = load_config(config_for(tmp_path, dovecot, smtp_capture))
    append_messages(dovecot, mails(0, 4))
    daemon = InProcess(config, source=Meddled(config.mailbox))
    daemon.once()  # marking done the two the person already took away is no error
    each_mail_once(config.path, 4)
    assert (folder(dovecot, "Processed"), folder(dovecot, "Elsewhere"), folder(dovecot, "INBOX")) == (2, 1, 0)
    append_messages(dovecot, mails(4, 1))
    InProcess(config).once()
    each_mail_once(config.path, 5)


def test_the_done_folder_deleted_while_running(tmp_path, dovecot, smtp_capture):
    config = config_for(tmp_path, dovecot, smtp_capture)
    daemon = Daemon(config)
    try:
        with dovecot.connect() as person:
            person.delete_folder("Processed")
        append_messages(dovecot, mails(0, 2))
        wait_until(lambda: folder(dovecot, "Processed") == 2, 60, "2 in a re-created Processed", daemon.log)
    finally:
        daemon.stop()
    each_mail_once(config, 2)
    assert len(daemon.lines("ERROR")) == 1 and daemon.lines("creating the folder 'Processed'")
