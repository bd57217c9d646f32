"""systemd: sd_notify READY/STATUS/WATCHDOG over a socket standing in for NOTIFY_SOCKET, and the unit file."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import threading

import pytest
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.delivery import ProcessDelivery
from inboxd.errors import SourceError
from inboxd.init import starter_files
from inboxd.outbox import FakeTransport
from inboxd.servers import append_messages
from inboxd.source import FakeSource
from inboxd.systemd import Notifier

from helpers import make_mail, write_config


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A datagram socket where systemd's would be, named by NOTIFY_SOCKET, with a 40 ms watchdog."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "40000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def drain(sock: socket.socket) -> list[str]:
    """What is waiting in the socket now."""
    found = []
    sock.setblocking(False)
    try:
        while True:
            found.append(receive(sock))
    except BlockingIOError:
        return found
    finally:
        sock.settimeout(10)


def assert_silent(sock: socket.socket) -> None:
    """Nothing arrives for 0.5 s: a dozen watchdog intervals of 40 ms."""
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        print("unexpected:", receive(sock))
    sock.settimeout(10)


class StallingSource(FakeSource):
    """A mailbox whose wait can be made to hang, like a call that never returns; counts the loop's turns."""

    def __init__(self) -> None:
        super().__init__()
        self.stall, self.stalled, self.release = threading.Event(), threading.Event(), threading.Event()
        self.turns = 0

    def wait(self, seconds: float, interrupt: threading.Event) -> None:
        self.turns += 1
        if self.stall.is_set():
            self.stalled.set()
            self.release.wait()
            self.stall.clear()
        super().wait(seconds, interrupt)


@pytest.fixture
def running(config, clock, notify_socket):
    """The daemon in a thread on a StallingSource, the notify socket set; stopped afterwards."""
    source = StallingSource()
    daemon = Daemon(config, clock=clock, source=source, transport=FakeTransport())
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    yield daemon, source
    source.release.set()
    daemon.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_ready_after_start_then_watchdog_pings_while_the_loop_turns(running, notify_socket):
    first = receive(notify_socket)
    assert first == "READY=1\nSTATUS=connecting to inboxd@127.0.0.1:1143/INBOX", first
    later = [receive(notify_socket) for _ in range(6)]
    assert "STATUS=watching inboxd@127.0.0.1:1143/INBOX with IDLE" not in later  # FakeSource cannot IDLE
    assert "STATUS=watching inboxd@127.0.0.1:1143/INBOX with polling every 60s" in later
    assert later.count("WATCHDOG=1") >= 4


def test_no_watchdog_while_the_loop_is_stalled_and_again_once_it_turns(running, notify_socket):
    daemon, source = running
    assert receive(notify_socket).startswith("READY=1")
    source.stall.set()
    assert source.stalled.wait(10)
    drain(notify_socket)  # pings sent before the loop stalled
    assert_silent(notify_socket)
    source.release.set()
    assert receive(notify_socket) == "WATCHDOG=1"


def test_no_watchdog_once_the_outbox_thread_has_died_though_the_loop_turns(running, notify_socket):
    daemon, source = running
    assert receive(notify_socket).startswith("READY=1")
    while not receive(notify_socket).startswith("STATUS=watching"):  # connected: only pings from here on
        pass
    daemon.sender.stopping.set()  # its workers end, as if they had died
    daemon.sender.notify()
    daemon.delivery.thread.join(10)
    drain(notify_socket)
    turns = source.turns
    assert_silent(notify_socket)
    assert source.turns > turns + 10  # the IMAP loop went on turning all along


def test_no_watchdog_once_the_delivery_process_has_died_though_the_loop_turns(config, notify_socket):
    """The default: delivery in a process of its own; killed, the watchdog hears nothing more, so systemd restarts."""
    source = StallingSource()
    daemon = Daemon(config, source=source)
    assert isinstance(daemon.delivery, ProcessDelivery)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert receive(notify_socket).startswith("READY=1")
        while not receive(notify_socket).startswith("STATUS=watching"):
            pass
        assert daemon.delivery.alive()
        daemon.delivery.process.kill()
        daemon.delivery.process.wait(10)
        drain(notify_socket)
        turns = source.turns
        assert_silent(notify_socket)
        assert source.turns > turns + 10
    finally:
        daemon.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_mail_keeps_the_watchdog_fed_batch_by_batch(tmp_path, clock, notify_socket, monkeypatch):
    """A long backlog is read in batches; each batch done is a sign of life (no restart mid-backlog)."""
    source = FakeSource()
    source.add([make_mail(subject=f"Request {n}") for n in range(3)])
    monkeypatch.setenv("WATCHDOG_USEC", "1")  # ping at every chance
    daemon = Daemon(load_config(write_config(tmp_path, batch_size=1)), clock=clock, source=source,
                    transport=FakeTransport())
    daemon._start_delivery()
    assert daemon.ingest(1) == 3
    daemon._stop_delivery()
    assert drain(notify_socket).count("WATCHDOG=1") == 4  # three batches, then "none left"


class DownSource(FakeSource):
    """An IMAP server that refuses every connection; the test stops the daemon after a few tries."""

    def __init__(self) -> None:
        super().__init__()
        self.daemon: Daemon | None = None

    def open(self) -> int:
        assert self.daemon is not None
        self.daemon._backoff = 0.01
        raise SourceError("IMAP: cannot connect to 127.0.0.1:1 (none): ConnectionRefusedError")


def test_status_says_imap_is_unavailable_and_stopping_is_announced(config, clock, notify_socket):
    source = DownSource()
    daemon = Daemon(config, clock=clock, source=source, transport=FakeTransport())
    source.daemon = daemon
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    assert receive(notify_socket).startswith("READY=1")
    assert "STATUS=IMAP unavailable, retrying: IMAP: cannot connect to 127.0.0.1:1 (none): ConnectionRefusedError" \
        in [receive(notify_socket) for _ in range(3)]
    assert receive(notify_socket) == "WATCHDOG=1"  # an outage is waited out: systemd need not restart inboxd
    daemon.stop()
    thread.join(10)
    assert "STOPPING=1\nSTATUS=stopping: sending what is queued" in drain(notify_socket)


def test_on_a_real_mailbox_ready_then_idle_then_a_request_is_tracked_and_the_watchdog_fed(
        tmp_path, mailbox, smtp_capture, notify_socket):
    config = load_config(write_config(tmp_path, imap_port=mailbox.port, smtp_port=smtp_capture.port,
                                      imap_user=mailbox.user, imap_password=mailbox.password))
    daemon = Daemon(config)
    outcomes: queue.Queue = queue.Queue()
    daemon.listeners.append(outcomes.put)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert receive(notify_socket) == f"READY=1\nSTATUS=connecting to {config.mailbox.label}"
        while (said := receive(notify_socket)) == "WATCHDOG=1":
            pass
        assert said == f"STATUS=watching {config.mailbox.label} with IDLE"
        assert receive(notify_socket) == "WATCHDOG=1"  # the loop's first turn, then it waits in IDLE
        drain(notify_socket)
        append_messages(mailbox, [make_mail(subject="Printer jams")])
        assert outcomes.get(timeout=30).kind == "item"
        assert receive(notify_socket) == "WATCHDOG=1"  # the batch done
    finally:
        daemon.stop()
        thread.join(30)
    assert "STOPPING=1\nSTATUS=stopping: sending what is queued" in drain(notify_socket)
    assert smtp_capture.wait_for(1, timeout=10)  # the acknowledgement went out


def test_the_notifier_reads_systemds_variables(tmp_path):
    assert Notifier.from_environment({}).address is None
    told = Notifier.from_environment({"NOTIFY_SOCKET": "@inboxd/notify", "WATCHDOG_USEC": "30000000"})
    assert told.address == "\0inboxd/notify" and told.watchdog_seconds == 30.0
    other = {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_environment(other).watchdog_seconds is None  # meant for another process
    Notifier(None, 1.0).alive()  # no socket: nothing to do, no error
    Notifier(str(tmp_path / "nobody-listens"), 1.0).alive()  # systemd gone: no error either


def test_status_is_sent_when_it_changes_and_pings_are_spaced(notify_socket, tmp_path):
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "600000000"})
    notifier.ready("starting")
    notifier.status("starting")
    notifier.status("watching")
    for _ in range(100):
        notifier.alive()
    assert drain(notify_socket) == ["READY=1\nSTATUS=starting", "STATUS=watching", "WATCHDOG=1"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None and os.environ.get("CI") != "true",
                    reason="systemd-analyze is not installed here (Debian: systemd); .ci/run installs it")
def test_the_unit_file_passes_systemd_analyze_verify(tmp_path):
    directory = tmp_path / "etc-inboxd"
    unit = tmp_path / "inboxd.service"
    unit.write_text(starter_files(directory, systemd=True, python=sys.executable)[unit.relative_to(tmp_path)])
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # A misspelt key or value is only a warning ("…, ignoring") with exit 0: any line naming the file fails too.
    assert done.returncode == 0 and "inboxd.service" not in done.stdout + done.stderr, done.stdout + done.stderr
    text = unit.read_text()
    for line in ("Type=notify", "WatchdogSec=5min", "Restart=on-failure", "StateDirectory=inboxd", "User=inboxd",
                 "ProtectSystem=strict", "NoNewPrivileges=yes",
                 f"LoadCredential=imap-password:{directory}/credentials/imap-password",
                 f"ExecStart={sys.executable} -m inboxd --config {directory}/config.toml run"):
        assert f"\n{line}\n" in text, line


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a misspelt type is reported, naming the file."""
    if shutil.which("systemd-analyze") is None and os.environ.get("CI") != "true":
        pytest.skip("systemd-analyze is not installed here (Debian: systemd); .ci/run installs it")
    unit = tmp_path / "inboxd.service"
    good = starter_files(tmp_path, systemd=True, python=sys.executable)[unit.relative_to(tmp_path)]
    unit.write_text(good.replace("Type=notify", "Type=notfy"))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "inboxd.service:" in done.stderr and "notfy" in done.stderr, done.stderr
