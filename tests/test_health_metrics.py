"""`inboxd health`, /healthz and /metrics reflect reality: the daemon runs in a thread on a Dovecot of
this test's own and an SMTP capture, with [http] listen set; the IMAP server is stopped, or its session
frozen (a fetcher that hangs rather than fails), and health turns red while /metrics shows the stall.

The stall threshold (two minutes) and the sweep's minute are shortened to seconds here; the figures
are read through prometheus-client's own parser of the text format.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import inboxd.daemon as daemon_module
import pytest
from inboxd import health, http
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.errors import InboxdError
from inboxd.servers import HOST, DovecotServer, append_messages, free_port
from prometheus_client.parser import text_string_to_metric_families

from helpers import make_mail, write_config

STALL = 3.0  # seconds without a read that make health red here (120 in service)


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    if not DovecotServer.available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but Dovecot is not available")
        pytest.skip("Dovecot is not installed (bash .ci/run installs it)")
    with DovecotServer() as server:
        yield server


class Watched:
    """The daemon in a thread, with its /healthz, /metrics and `inboxd health` at hand."""

    def __init__(self, tmp_path: Path, dovecot: DovecotServer, smtp) -> None:
        self.port = free_port()
        self.config = write_config(tmp_path, imap_port=dovecot.port, smtp_port=smtp.port, imap_user=dovecot.user,
                                   imap_password=dovecot.password, extra=f'[http]\nlisten = "{HOST}:{self.port}"\n')
        self.config.write_text(self.config.read_text().replace("batch_size = 100", "batch_size = 100\n"
                                                                "timeout_seconds = 20"))
        self.daemon = Daemon(load_config(self.config))
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}{path}", timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def listening(self) -> bool:
        try:
            return self.get("/healthz")[0] in (200, 503)
        except urllib.error.URLError:
            return False

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, parsed by prometheus-client: (name, labels) -> value."""
        code, text = self.get("/metrics")
        assert code == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def health(self) -> tuple[int, str]:
        """`inboxd health` as a process of its own (in this one it would rebind the daemon's database)."""
        done = subprocess.run([sys.executable, "-m", "inboxd.cli", "--config", str(self.config), "health",
                               "--stall", str(STALL)],
                              capture_output=True, text=True, timeout=30)
        return done.returncode, done.stdout + done.stderr


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> float:
    """Seconds it took for `check` to hold."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.2)
    return time.monotonic() - start


@pytest.fixture
def watched(tmp_path, dovecot, smtp_capture, monkeypatch) -> Iterator[Watched]:
    monkeypatch.setattr(health, "STALL_SECONDS", STALL)  # for /healthz and /metrics; `inboxd health --stall`
    monkeypatch.setattr(health, "BEAT_SECONDS", 0.2)  # the file follows each read
    monkeypatch.setattr(daemon_module, "SWEEP_SECONDS", 1)  # the loop reads the mailbox each second
    room = Watched(tmp_path, dovecot, smtp_capture)
    room.thread.start()
    try:
        wait_until(room.listening, "/healthz served")
        yield room
    finally:
        room.daemon.stop()
        room.thread.join(30)


def test_a_request_is_counted_and_health_is_green(watched, dovecot, smtp_capture):
    before = watched.metrics()
    append_messages(dovecot, [make_mail("rosa@example.org", "Printer on fire", "Please help.")])
    wait_until(lambda: any("rosa@example.org" in m.rcpt_tos for m in smtp_capture.messages), "the acknowledgement")
    wait_until(lambda: watched.health()[0] == 0, "health green")
    code, out = watched.health()
    assert "IMAP connection:    IDLE alive" in out and "mails waiting:      0" in out
    assert "outbox:             0 pending, 0 dead" in out and "database:           reachable" in out
    after = watched.metrics()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("inboxd_mails_in_total", outcome="item") == 1
    assert grew("inboxd_mails_sent_total", kind="ack") == 1
    assert grew("inboxd_acknowledgement_latency_seconds_count") == 1
    assert sum(value for (name, _), value in after.items() if name == "inboxd_items") == 1  # by status
    assert after[("inboxd_outbox_mails", (("status", "pending"),))] == 0
    assert after[("inboxd_healthy", ())] == 1 and after[("inboxd_database_up", ())] == 1
    assert after[("inboxd_imap_connection", (("state", "idle"),))] == 1
    assert after[("inboxd_imap_activity_age_seconds", ())] < STALL
    assert watched.get("/healthz")[0] == 200 and watched.get("/other")[0] == 404
    sweeps = ("inboxd_sweep_duration_seconds_count", ())
    wait_until(lambda: watched.metrics()[sweeps] > after[sweeps], "the next sweep timed")  # one a second here


def test_a_stopped_imap_server_turns_health_red_and_metrics_show_the_stall(watched, dovecot):
    wait_until(lambda: watched.health()[0] == 0, "health green")
    dovecot.pause()
    took = wait_until(lambda: watched.health()[0] == 1, "health red")
    assert took < STALL + 10
    code, out = watched.health()
    assert out.startswith("not reading mail: the mailbox was last read") and "IMAP down" in out
    assert "IMAP connection:    down, reconnecting" in out
    status, text = watched.get("/healthz")
    assert status == 503 and text.startswith("not reading mail")
    seen = watched.metrics()
    assert seen[("inboxd_healthy", ())] == 0 and seen[("inboxd_imap_activity_age_seconds", ())] > STALL
    assert seen[("inboxd_imap_connection", (("state", "down"),))] == 1
    assert time.time() - seen[("inboxd_last_imap_activity_timestamp_seconds", ())] > STALL
    dovecot.resume()
    wait_until(lambda: watched.health()[0] == 0, "health green again", timeout=90)  # the backoff may be long
    assert watched.metrics()[("inboxd_healthy", ())] == 1


def test_a_hanging_imap_session_is_a_stall_too(watched, dovecot):
    """The server's process freezes (no error, no hang-up): the daemon waits on a read that never ends."""
    wait_until(lambda: watched.health()[0] == 0, "health green")
    sessions = session_pids(dovecot)
    assert sessions
    for pid in sessions:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: watched.health()[0] == 1, "health red", timeout=STALL + 10)
        assert watched.health()[1].startswith("not reading mail")
        seen = watched.metrics()  # served beside the stuck loop
        assert seen[("inboxd_healthy", ())] == 0 and seen[("inboxd_imap_activity_age_seconds", ())] > STALL
    finally:
        for pid in sessions:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: watched.health()[0] == 0, "health green again", timeout=60)


def session_pids(dovecot: DovecotServer) -> list[int]:
    """The processes serving logged-in IMAP sessions of this Dovecot."""
    master, found = dovecot._pid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if text.split("(", 1)[1].rsplit(")", 1)[0] == "imap" and int(text.rsplit(")", 1)[1].split()[1]) == master:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.server
def test_an_address_already_in_use_is_one_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InboxdError, match=rf'\[http\] listen = "{HOST}:{port}": cannot listen there: Address '
                                              r"already in use"):
            with http.serving((HOST, port), {"IT": health.Health(tmp_path / "h.json")}):
                pass
