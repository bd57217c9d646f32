"""Delivery beside the intake: a thread of the daemon, or (the default) a process of its own.

The intake composes each mail and enqueues it in its item's transaction; delivery sends and
records it. In one process both take turns under one interpreter lock, so the intake waited for
the sending and the sending for the intake (issue 15). The delivery process has its own
database connection and interpreter: it hears of new mail through a pipe (a byte per wake-up,
never blocking the intake), tells the daemon what became of each mail (metrics, mail not
delivered to everyone, refused logins) through another, and when the daemon closes its end or
dies it sends what is due and ends. A lock of its own makes the delivery of a restarted daemon
wait for the last one's, so no mail is ever sent by two.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from contextvars import copy_context
from multiprocessing.connection import Connection
from typing import Any, Protocol

from .backup import sqlite_path
from .clock import SystemClock
from .config import Config
from .instance import STANDBY_POLL_SECONDS, AlreadyRunning, InstanceLock
from .models import use_team
from .outbox import Ledger, OutboxSender, SmtpTransport
from .tracker import Silences

log = logging.getLogger(__name__)
RESTART_SECONDS = 10.0  # a delivery process that died is started again after this long, then at doubling
MAX_RESTART_SECONDS = 600.0  # intervals up to this
START_RETRY_SECONDS = 30.0  # the longest wait between tries while the database is unavailable at its start
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # to the whole group (Ctrl-C, systemd's stop): the daemon's


def apart_possible(database_url: str) -> bool:
    """Another process can open this database: PostgreSQL or a SQLite file, not SQLite in memory."""
    return not database_url.startswith("sqlite") or sqlite_path(database_url) is not None


class Delivery(Protocol):
    """Sends the outbox while the daemon reads mail."""

    def start(self) -> None:
        """Start sending."""
        ...

    def notify(self) -> None:
        """New mail is in the outbox."""
        ...

    def alive(self) -> bool:
        """Still sending (for the watchdog); one that died may be started again here."""
        ...

    def stop(self) -> None:
        """Send what is due now, then stop."""
        ...


class ThreadDelivery:
    """The outbox sent by a thread of the daemon: for tests with a transport of their own, and in-memory databases."""

    def __init__(self, sender: OutboxSender) -> None:
        self.sender = sender
        self.thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self._stop = threading.Event()
        self.thread = threading.Thread(target=copy_context().run, args=(self.sender.serve, self._stop), name="outbox",
                                       daemon=True)  # for the starting thread's team
        self.thread.start()

    def notify(self) -> None:
        self.sender.notify()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self.sender.notify()
        if self.thread is not None:
            self.thread.join()


class ProcessDelivery:
    """The outbox sent by a process of its own, which reports each delivery to the daemon's ledger.

    A process that dies (a bug, the OOM killer, a kill by hand) is started again, at growing
    intervals, so that mail does not wait for a restart of the whole daemon; each time is an ERROR.
    """

    def __init__(self, config: Config, ledger: Ledger) -> None:
        self.config, self.ledger = config, ledger
        self.process: subprocess.Popen[bytes] | None = None
        self._wake: Connection | None = None
        self._listener: threading.Thread | None = None
        self._started, self._restart_after = 0.0, RESTART_SECONDS
        self._running = False  # between start() and stop(): only then is a dead process started again

    def start(self) -> None:
        wake_in, wake_out = os.pipe()
        reports_in, reports_out = os.pipe()
        # A fresh interpreter that imports only the delivery (multiprocessing's spawn would also run the
        # daemon's main module again and start its resource tracker: a third process). Our sys.path comes first
        # on its stdin, so it imports this very inboxd, then the config.
        command = [sys.executable, "-c", _CHILD, "inboxd-delivery", str(wake_in), str(reports_out),
                   str(logging.getLogger().level)]
        # Blocked across the start (the child inherits the mask) until the child ignores them: a Ctrl-C or
        # a SIGTERM while its interpreter starts must not kill it.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, pass_fds=(wake_in, reports_out))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            os.close(wake_in)  # the child's ends: only the child holds them now, so its death or ours is an EOF
            os.close(reports_out)
        self._started, self._running = time.monotonic(), True
        assert self.process.stdin is not None
        try:
            with self.process.stdin:
                self.process.stdin.write(pickle.dumps(sys.path) + pickle.dumps(self.config))
        except BrokenPipeError:
            pass  # it died at once: alive() says so and starts another
        os.set_blocking(wake_out, False)
        self._wake = Connection(wake_out, readable=False)
        self._listener = threading.Thread(target=self._listen, args=(Connection(reports_in, writable=False),),
                                          name="delivery-reports", daemon=True)
        self._listener.start()

    def _listen(self, reports: Connection) -> None:
        """Apply the delivery process's reports to the ledger until it ends."""
        with reports:
            while True:
                try:
                    name, args = reports.recv()
                except (EOFError, OSError):
                    return
                try:
                    getattr(self.ledger, name)(*args)
                except Exception:  # a figure lost, never the listener: without it the process would block on us
                    log.exception("delivery: a report (%s) could not be taken", name)

    def notify(self) -> None:
        if self._wake is None:
            return
        try:
            os.write(self._wake.fileno(), b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups the process has not read yet: it is awake
        except OSError:
            self.alive()  # it has died: started again when its time comes; the mail waits in the outbox

    def alive(self) -> bool:
        if self.process is None or self.process.poll() is None:
            return self.process is not None
        since = time.monotonic() - self._started
        if not self._running or since < self._restart_after:
            return False
        log.error("delivery: the delivery process ended unexpectedly (exit code %s); starting it again, mail "
                  "waits in the outbox meanwhile", self.process.returncode)
        self._end()
        # Dying again soon waits longer each time; after a long good run, the short wait again.
        self._restart_after = RESTART_SECONDS if since > MAX_RESTART_SECONDS \
            else min(self._restart_after * 2, MAX_RESTART_SECONDS)
        self.start()
        return True

    def stop(self) -> None:
        self._running = False
        self._end()
        if self.process is not None and self.process.returncode:
            log.error("delivery: the delivery process ended with exit code %s; unsent mail stays in the "
                      "outbox for the next start", self.process.returncode)

    def _end(self) -> None:
        """Close the wake-up pipe (EOF: the process sends what is due and ends) and wait for it and its reports."""
        if self._wake is not None:
            self._wake.close()
            self._wake = None
        if self.process is not None:
            self.process.wait()
        if self._listener is not None:
            self._listener.join()


class _Forward:
    """The delivery process's side of the ledger: each report goes down the pipe to the daemon."""

    def __init__(self, reports: Connection) -> None:
        self.reports, self.broken = reports, False

    def _send(self, name: str, *args: Any) -> None:
        if self.broken:
            return
        try:
            self.reports.send((name, args))
        except OSError:
            self.broken = True  # the daemon is gone: the database has it all, the figures are lost with it

    def sent(self, row_id: int, kind: str, ack_wait: float | None, not_for: str) -> None:
        self._send("sent", row_id, kind, ack_wait, not_for)

    def failed(self, row_id: int, kind: str, why: str, final: bool) -> None:
        self._send("failed", row_id, kind, why, final)

    def login(self, why: str, ok: bool) -> None:
        self._send("login", why, ok)


_CHILD = "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); from inboxd.delivery import main; main()"


def main() -> None:
    """The delivery process's entry: its pipes and log level from the command line, the config on stdin."""
    wake, reports, level = (int(value) for value in sys.argv[2:5])
    config = pickle.load(sys.stdin.buffer)
    sys.stdin.close()
    deliver(config, Connection(wake, writable=False), Connection(reports, readable=False), level)


def deliver(config: Config, wake: Connection, reports: Connection, level: int) -> None:
    """The delivery process: send the outbox whenever woken until the daemon closes the pipe, then what is due."""
    from . import logs
    from .oauth2 import token_sources

    # Stopping is the daemon's to say (by closing the pipe): Ctrl-C or systemd's SIGTERM to the whole
    # group must not cut a mail in half between the server's 250 and its record.
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by the daemon until now
    logs.setup(level <= logging.DEBUG)
    logs.use(config.log_format)
    use_team(config.team.key)  # its team's mail only: the SMTP server and sender are the team's
    lock = _started(config, wake)
    if lock is None:
        return
    _, smtp_tokens = token_sources(config.mailbox.oauth2, config.smtp.oauth2)
    sender = OutboxSender([SmtpTransport(config.smtp, smtp_tokens) for _ in range(config.smtp.connections)],
                          SystemClock(), config.smtp, config.team, report=_Forward(reports),
                          silences=Silences(config.calendar, config.service.update_every),
                          sent_log_name=config.sent_log_name)
    stop = threading.Event()
    worker = threading.Thread(target=copy_context().run, args=(sender.serve, stop), name="outbox", daemon=True)
    worker.start()
    with wake:
        while True:
            if not _woken(wake, None):
                break  # EOF: the daemon stops, or died
            sender.notify()
    stop.set()
    sender.notify()
    worker.join()
    reports.close()
    lock.release()


def _started(config: Config, wake: Connection) -> InstanceLock | None:
    """Take the delivery lock and the database, waiting out an unavailable one; None if the daemon stops first.

    The lock makes a killed daemon's delivery, which may still be finishing, and ours never send at once.
    """
    from .models import connect_database, forget_connection, outage

    wait, said = 1.0, False
    lock = InstanceLock(config, role="delivery")
    while True:
        pause = wait
        try:
            lock.acquire()  # not standing by inside: the daemon's stop must end this wait too
            connect_database(config.database_url)  # the daemon has brought the schema up to date
            return lock
        except AlreadyRunning:
            why, pause = "the delivery of an inboxd that stopped or died is still sending", STANDBY_POLL_SECONDS
        except Exception as exc:
            unavailable = outage(exc) or (exc.strerror if isinstance(exc, OSError) else None)
            if unavailable is None:
                raise
            why = unavailable
            forget_connection()
            wait = min(wait * 2, START_RETRY_SECONDS)
        (log.debug if said else log.warning)("delivery: cannot start yet: %s; mail waits in the outbox", why)
        said = True
        lock.release()
        if not _woken(wake, pause, until_eof=True):
            return None


def _woken(wake: Connection, seconds: float | None, until_eof: bool = False) -> bool:
    """Wait for a wake-up (or `seconds`); False at EOF: the daemon closed its end, or died."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            if not wake.poll(left):
                return True  # the time is up
            if not os.read(wake.fileno(), 65536):
                return False
        except OSError:
            return False
        if not until_eof:
            return True

