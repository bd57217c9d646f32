"""Delivery beside the intake: a thread of the daemon, or (the default) a process of its own.

The intake composes each mail and enqueues it in its item's transaction; delivery sends and
records it. In one process both take turns under one interpreter lock, so the intake waited for
the sending and the sending for the intake (issue 15). The delivery process has its own
database connection and interpreter: it hears of new mail through a pipe (a byte per wake-up,
never blocking the intake), tells the daemon what became of each mail (metrics, mail not
delivered to everyone, refused logins) through another, and when the daemon closes its end or
dies it sends what is due and ends. On SQLite a lock of its own makes the delivery of a restarted
daemon wait for the last one's, so no mail is ever sent by two.

On PostgreSQL no such lock is taken: each mail is claimed under a row lock (`FOR UPDATE SKIP LOCKED`,
outbox.py), so any number of deliveries may overlap, and a worker (workers.py) runs ONE delivery
process for every team of its config, whether or not it holds that team's mailbox lease: the outbox
is drained by all workers at once. Its reports name their team, for that team's ledger.
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
from collections.abc import Callable, Sequence
from contextvars import copy_context
from multiprocessing.connection import Connection
from typing import Any, Protocol

from .backup import sqlite_path
from .clock import SystemClock
from .config import Config
from .instance import STANDBY_POLL_SECONDS, AlreadyRunning, InstanceLock
from .models import use_team
from .outbox import OutboxSender, Report, SmtpTransport
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


class SharedDelivery:
    """A team's part in its worker's delivery (workers.py): new mail wakes it; it starts and stops with the worker."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    def start(self) -> None:
        pass

    def notify(self) -> None:
        self.delivery.notify()

    def alive(self) -> bool:
        return self.delivery.alive()

    def stop(self) -> None:
        pass  # the worker's delivery sends on for the other teams, and this one's mail with them


class ProcessDelivery:
    """The outbox of these teams sent by a process of its own, which reports each delivery to its team's ledger.

    A process that dies (a bug, the OOM killer, a kill by hand) is started again, at growing
    intervals, so that mail does not wait for a restart of the whole daemon; each time is an ERROR.
    """

    def __init__(self, configs: Sequence[Config], ledger: Callable[[str], Report | None]) -> None:
        """`ledger`: where a team's reports go (by its key); None: not here, they are logged."""
        self.configs, self.ledger = list(configs), ledger
        self.process: subprocess.Popen[bytes] | None = None
        self._wake: Connection | None = None
        self._listener: threading.Thread | None = None
        self._started, self._restart_after = 0.0, RESTART_SECONDS
        self._running = False  # between start() and stop(): only then is a dead process started again
        self._restarting = threading.Lock()  # a worker's teams' threads all ask alive()

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
                self.process.stdin.write(pickle.dumps(sys.path) + pickle.dumps(self.configs))
        except BrokenPipeError:
            pass  # it died at once: alive() says so and starts another
        os.set_blocking(wake_out, False)
        self._wake = Connection(wake_out, readable=False)
        self._listener = threading.Thread(target=self._listen, args=(Connection(reports_in, writable=False),),
                                          name="delivery-reports", daemon=True)
        self._listener.start()

    def _listen(self, reports: Connection) -> None:
        """Apply the delivery process's reports to their team's ledger until it ends."""
        with reports:
            while True:
                try:
                    key, name, args = reports.recv()
                except (EOFError, OSError):
                    return
                try:
                    if (ledger := self.ledger(key)) is not None:
                        getattr(ledger, name)(*args)
                    else:
                        _unheard(key, name, args)
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
        with self._restarting:
            return self._alive()

    def _alive(self) -> bool:
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
        with self._restarting:
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


def _unheard(key: str, name: str, args: tuple[Any, ...]) -> None:
    """A report of a team whose daemon does not run in this worker: the log has it (the sender logged the mail)."""
    if name == "login" and not args[1]:
        log.warning("delivery: team %s: %s", key, args[0])  # its daemon, elsewhere, does not hear of it
    else:
        log.debug("delivery: team %s (served by another worker): %s %s", key, name, args)


class _Forward:
    """The delivery process's side of a team's ledger: each report goes down the pipe to the daemon, named."""

    def __init__(self, reports: Connection, key: str, sending: threading.Lock) -> None:
        self.reports, self.key, self.sending = reports, key, sending  # `sending`: the pipe's, shared by teams
        self.broken = False

    def _send(self, name: str, *args: Any) -> None:
        if self.broken:
            return
        try:
            with self.sending:  # the sender's threads take turns: a report is one whole message
                self.reports.send((self.key, name, args))
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
    """The delivery process's entry: its pipes and log level from the command line, the configs on stdin."""
    wake, reports, level = (int(value) for value in sys.argv[2:5])
    configs = pickle.load(sys.stdin.buffer)
    sys.stdin.close()
    deliver(configs, Connection(wake, writable=False), Connection(reports, readable=False), level)


def sender_session(configs: Sequence[Config]) -> str:
    """PostgreSQL settings of the delivery's sessions, so that a sender that froze or was cut off mid-send does
    not keep its mail's row locked for hours (PostgreSQL would wait for the system's TCP keepalives: ~2 h).

    Its transaction idles while the SMTP server takes the mail: a few steps (connect, login, data), each
    given up after the SMTP timeout; ten timeouts is well over a send. Its end rolls the claim back: the
    mail is pending again (sent once more at most, if the server had taken it). The server's keepalives
    find a vanished client within a minute and a half.
    """
    idle_ms = 10 * max(config.smtp.timeout_seconds for config in configs) * 1000
    return (f"-c idle_in_transaction_session_timeout={idle_ms} -c tcp_keepalives_idle=60 "
            f"-c tcp_keepalives_interval=10 -c tcp_keepalives_count=3")


def deliver(configs: Sequence[Config], wake: Connection, reports: Connection, level: int) -> None:
    """The delivery process: send the outbox whenever woken until the daemon closes the pipe, then what is due.

    One config: that team's mail (SQLite, or a PostgreSQL daemon of its own); several: a worker's, every team's.
    """
    from . import logs
    from .oauth2 import token_sources

    # Stopping is the daemon's to say (by closing the pipe): Ctrl-C or systemd's SIGTERM to the whole
    # group must not cut a mail in half between the server's 250 and its record.
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by the daemon until now
    logs.setup(level <= logging.DEBUG)
    logs.use(configs[0].log_format)
    use_team(configs[0].team.key)  # one team's: its SMTP server and sender; several: each row says its team
    lock = _started(configs, wake)
    if lock is None:
        return
    sending = threading.Lock()

    def team_sender(config: Config) -> OutboxSender:
        _, smtp_tokens = token_sources(config.mailbox.oauth2, config.smtp.oauth2)
        return OutboxSender([SmtpTransport(config.smtp, smtp_tokens) for _ in range(config.smtp.connections)],
                            SystemClock(), config.smtp, config.team, report=_Forward(reports, config.team.key, sending),
                            silences=Silences(config.calendar, config.service.update_every),
                            sent_log_name=config.sent_log_name)
    senders = {config.team.key: team_sender(config) for config in configs}
    sender = senders[configs[0].team.key] if len(senders) == 1 else \
        OutboxSender([], SystemClock(), configs[0].smtp, crew=senders)  # the lead of the teams' senders
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


def _started(configs: Sequence[Config], wake: Connection) -> InstanceLock | None:
    """Take the delivery lock (SQLite) and the database, waiting out an unavailable one; None if the daemon
    stops first.

    On SQLite the lock makes a killed daemon's delivery, which may still be finishing, and ours never send
    at once; on PostgreSQL the row locks do (the lock is returned, not taken).
    """
    from .models import connect_database, forget_connection, outage

    wait, said = 1.0, False
    url = configs[0].database_url
    claims = url.startswith("postgres")
    lock = InstanceLock(configs[0], role="delivery")
    while True:
        pause = wait
        try:
            if not claims:
                lock.acquire()  # not standing by inside: the daemon's stop must end this wait too
            connect_database(url, sender_session(configs) if claims else "")  # the schema is up to date
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

