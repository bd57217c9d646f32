"""Delivery in a process of its own (the daemon's default on the wall clock): it sends beside the
intake, reports each mail back to the daemon, and ends with it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from inboxd import delivery
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.delivery import ProcessDelivery, ThreadDelivery
from inboxd.errors import LoginsRefused
from inboxd.instance import InstanceLock
from inboxd.metrics import REGISTRY
from inboxd.models import Item, Outbox
from inboxd.servers import SmtpCapture, append_messages
from inboxd.servers.base import free_port
from inboxd.settings import Secret
from inboxd.source import FakeSource

from helpers import make_mail, write_config

pytestmark = pytest.mark.server  # each test talks SMTP (or finds nobody listening)


def requests(count: int) -> FakeSource:
    source = FakeSource()
    source.add([make_mail(sender=f"person{n}@example.org", subject=f"Request number {n}") for n in range(count)])
    return source


def sent_acks() -> float:
    return REGISTRY.get_sample_value("inboxd_mails_sent_total", {"kind": "ack"}) or 0.0


def test_the_daemon_on_the_wall_clock_delivers_from_a_process_and_hears_of_each_mail(tmp_path, smtp_capture):
    daemon = Daemon(load_config(write_config(tmp_path, smtp_port=smtp_capture.port)), source=requests(3))
    assert isinstance(daemon.delivery, ProcessDelivery)
    before = sent_acks()
    assert daemon.once() == 3
    assert sorted(r for m in smtp_capture.messages for r in m.rcpt_tos if r.startswith("person")) == [
        "person0@example.org", "person1@example.org", "person2@example.org"]
    assert sent_acks() - before == 3  # reported back to this process's metrics
    assert all(item.acknowledged_at for item in Item.select())
    # The process notes what the figures need as each acknowledgement leaves: in time, and heard then.
    assert all(item.acknowledged_quickly and item.heard_at == item.acknowledged_at for item in Item.select())
    assert {row.status for row in Outbox.select()} == {"sent"}
    assert not daemon.delivery.alive()


def test_a_test_clock_or_a_database_in_memory_keeps_delivery_in_a_thread(tmp_path, clock, smtp_capture):
    config = load_config(write_config(tmp_path, smtp_port=smtp_capture.port))
    assert isinstance(Daemon(config, clock=clock, source=FakeSource()).delivery, ThreadDelivery)
    in_memory = dataclasses.replace(config, database_url="sqlite:///:memory:")
    assert isinstance(Daemon(in_memory, source=FakeSource()).delivery, ThreadDelivery)


def test_mail_the_server_cannot_take_is_reported_undelivered_and_stays_in_the_outbox(tmp_path):
    daemon = Daemon(load_config(write_config(tmp_path, smtp_port=free_port())), source=requests(2))  # nobody listens
    assert daemon.once() == 2
    pending = {row.id for row in Outbox.select().where(Outbox.status == "pending")}
    assert len(pending) == Outbox.select().count() == 6  # two acknowledgements, four announcements
    assert daemon.ledger.undelivered and set(daemon.ledger.undelivered) <= pending  # tried until the first failure
    assert all("Connection refused" in why for why in daemon.ledger.undelivered.values())


def test_a_refused_smtp_login_is_reported_to_the_daemon(tmp_path):
    config = load_config(write_config(tmp_path))
    with SmtpCapture(login=("help", "smtp-secret")) as smtp:
        wrong = dataclasses.replace(config.smtp, port=smtp.port, user="help", password=Secret("not-it"))
        daemon = Daemon(dataclasses.replace(config, smtp=wrong), source=requests(1))
        refusals: list[tuple[str, bool]] = []
        daemon.ledger.on_login_refused = lambda why, ok: refusals.append((why, ok))
        daemon.once()
        assert smtp.messages == []
    assert refusals and all(not ok and "login as 'help'" in why for why, ok in refusals)


def test_run_stopped_by_refused_smtp_logins_tries_no_fourth_login_on_its_way_out(tmp_path):
    """Three refusals in a row stop `run`; the last sending at its stop would only risk locking the account."""
    config = load_config(write_config(tmp_path))
    with SmtpCapture(login=("help", "smtp-secret")) as smtp:
        wrong = dataclasses.replace(config.smtp, port=smtp.port, user="help", password=Secret("not-it"))
        daemon = Daemon(dataclasses.replace(config, smtp=wrong), source=requests(1))  # three mails, tried one by one
        refusals: list[str] = []
        daemon.ledger.on_login_refused = lambda why, ok: (refusals.append(why), daemon._smtp_login(why, ok))
        with pytest.raises(LoginsRefused, match="refused 3 times in a row"):
            daemon.run()
    assert len(refusals) == 3 and smtp.messages == []
    assert Outbox.select().where(Outbox.status == "pending").count() == 3  # waiting for the credentials


class SlowSmtp(SmtpCapture):
    """A capture that takes a while over each mail, so that there is a moment in the middle of sending."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        await asyncio.sleep(0.2)
        return await super().handle_DATA(server, session, envelope)


def test_a_killed_daemon_leaves_no_delivery_behind_and_nothing_sent_twice(tmp_path, mailbox):
    """SIGKILL to `inboxd run` mid-send: its delivery process sends what is due and ends; the next run sends the
    rest once."""
    with SlowSmtp() as smtp:
        config = write_config(tmp_path, mailbox.port, smtp.port, mailbox.user, mailbox.password)
        append_messages(mailbox, [make_mail(sender=f"p{n}@example.org", subject=f"Request {n}") for n in range(5)])
        command = [sys.executable, "-m", "inboxd.cli", "--config", str(config), "run"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), *sys.path])}
        log = open(tmp_path / "run.log", "wb")
        daemon = subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=tmp_path)
        try:
            assert _wait(lambda: _queued(tmp_path / "inboxd.db") == 15 and len(_acked(smtp)) >= 1), \
                (tmp_path / "run.log").read_text()  # all five requests in, their mail going out
            children = _children(daemon.pid)
            assert len(children) == 1  # the delivery process
        finally:
            daemon.send_signal(signal.SIGKILL)  # also when an assertion failed: no daemon outlives the test
            daemon.wait(10)
        assert len(smtp.messages) < 15  # (five requests, three mails each) the kill came in the middle
        assert _gone(children[0], 30)  # the pipe's end told it: no orphan keeps sending
        assert len(smtp.messages) == 15 and sorted(_acked(smtp)) == [f"p{n}@example.org" for n in range(5)]
        append_messages(mailbox, [make_mail(sender="late@example.org", subject="After the crash")])
        again = subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=tmp_path)
        try:
            assert _wait(lambda: len(_acked(smtp)) == 6), (tmp_path / "run.log").read_text()
            time.sleep(1)  # anything sent twice would have arrived by now
        finally:
            again.send_signal(signal.SIGTERM)
            assert again.wait(30) == 0
        assert sorted(_acked(smtp)) == ["late@example.org", *(f"p{n}@example.org" for n in range(5))]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_to_the_group_while_the_delivery_process_starts_stops_it_cleanly(tmp_path, mailbox,
                                                                                         smtp_capture, stop_signal):
    """The signal comes before the child's interpreter could ignore it: blocked from its start on, it does no harm."""
    config = write_config(tmp_path, mailbox.port, smtp_capture.port, mailbox.user, mailbox.password)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), *sys.path])}
    daemon = subprocess.Popen([sys.executable, "-m", "inboxd.cli", "--config", str(config), "run"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                              start_new_session=True)
    try:
        assert _wait(lambda: len(_children(daemon.pid)) == 1)
        child = _children(daemon.pid)[0]
        os.killpg(daemon.pid, stop_signal)  # Ctrl-C in a terminal, or systemd's stop: the whole group
        output = daemon.communicate(timeout=60)[0].decode()
    finally:
        if daemon.poll() is None:  # an assertion failed: no daemon outlives the test
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
    assert daemon.returncode == 0 and _gone(child, 5)
    assert "exit code" not in output and "KeyboardInterrupt" not in output, output


def _queued(database: Path) -> int:
    """The mails in the outbox of `database`, whatever became of them (0 before it has one)."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            return connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    except sqlite3.Error:
        return 0


def _acked(smtp: SmtpCapture) -> list[str]:
    """The requesters of the mail the capture holds, once per mail (so a mail sent twice shows twice)."""
    return [r for m in smtp.messages for r in m.rcpt_tos if r.startswith(("p", "late@"))]


def _wait(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _children(pid: int) -> list[int]:
    """The delivery processes `pid` started."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [child for child in children if b"inboxd-delivery" in Path(f"/proc/{child}/cmdline").read_bytes()]


def _gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"):
            return True  # ended, waiting to be reaped by init
        time.sleep(0.05)
    return False


def test_a_delivery_process_that_died_is_started_again_and_the_mail_goes(tmp_path, smtp_capture, monkeypatch, caplog):
    monkeypatch.setattr(delivery, "RESTART_SECONDS", 0.2)
    source = requests(1)
    daemon = Daemon(load_config(write_config(tmp_path, smtp_port=smtp_capture.port)), source=source)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert _wait(lambda: len(smtp_capture.messages) == 3)  # the acknowledgement and two announcements
        first = daemon.delivery.process
        first.kill()
        first.wait(10)
        source.add([make_mail(sender="after@example.org", subject="After the kill")])
        daemon._wakeup.set()
        assert _wait(lambda: "after@example.org" in _recipients(smtp_capture))
        assert daemon.delivery.process is not first and daemon.delivery.alive()
    finally:
        daemon.stop()
        thread.join(30)
    assert not thread.is_alive() and not daemon.delivery.alive()
    assert "the delivery process ended unexpectedly (exit code -9); starting it again" in caplog.text
    assert _recipients(smtp_capture).count("after@example.org") == 1


def _recipients(smtp: SmtpCapture) -> list[str]:
    return [r for m in smtp.messages for r in m.rcpt_tos]


def test_a_daemon_stopped_while_the_last_delivery_still_sends_stops_without_waiting_for_it(tmp_path, smtp_capture):
    """Its delivery process, waiting for the delivery lock, ends at the daemon's stop; the mail stays in the outbox."""
    config = load_config(write_config(tmp_path, smtp_port=smtp_capture.port))
    daemon = Daemon(config, source=requests(1))
    last = InstanceLock(config, role="delivery")
    last.acquire()  # the delivery of a killed daemon, still sending (or stuck)
    thread = threading.Thread(target=daemon.run, daemon=True)
    try:
        thread.start()
        assert _wait(lambda: Outbox.select().count() == 3)
        daemon.stop()
        thread.join(30)
        assert not thread.is_alive()
    finally:
        last.release()
    assert smtp_capture.messages == [] and {row.status for row in Outbox.select()} == {"pending"}


def test_a_report_the_daemon_cannot_take_costs_that_report_only(tmp_path, smtp_capture, caplog):
    """A failing ledger must not end the listener: the delivery process would block on a full pipe."""
    daemon = Daemon(load_config(write_config(tmp_path, smtp_port=smtp_capture.port)), source=requests(3))
    real_sent, calls = daemon.ledger.sent, []

    def failing_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("a bug in a metric")
        real_sent(*args)
    daemon.ledger.sent = failing_once
    assert daemon.once() == 3
    assert len(calls) == len(smtp_capture.messages) == 9  # every report came, after the one that failed
    assert "a report (sent) could not be taken" in caplog.text
