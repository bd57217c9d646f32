"""The daemon loop: reload keeps a good rule set, outages are logged once and survived."""

import logging
from datetime import datetime, timedelta, timezone

from helpers import REPO, make_mail, write_config

from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.errors import SourceError, SourceHiccup
from inboxd.models import Item
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource


def test_reload_refuses_a_broken_rule_set_and_keeps_the_old_one(tmp_path, caplog):
    import shutil
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    daemon = Daemon(load_config(write_config(tmp_path, rules=rules)), source=FakeSource(), transport=FakeTransport())
    before = daemon.pipeline
    (rules / "99-new.toml").write_text('[[rule]]\nname = "x"\nmatch.subject = { regex = "(" }\nqueue = "ops"\n')
    with caplog.at_level(logging.ERROR):
        daemon.reload()
    assert daemon.pipeline is before
    assert "reload refused" in caplog.text and "99-new.toml:3: x: match.subject.regex" in caplog.text
    (rules / "99-new.toml").write_text('[[rule]]\nname = "x"\nmatch.subject = { contains = "zz" }\nqueue = "ops"\n')
    daemon.reload()
    assert daemon.pipeline is not before and daemon.pipeline.rules.rules[-1].name == "x"


class FlakySource(FakeSource):
    """Fails to connect a few times, like a server being restarted; stops the daemon once it reads."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures, self.opens, self.daemon = failures, 0, None

    def open(self) -> int:
        self.opens += 1
        if self.opens <= self.failures:
            raise SourceError("IMAP: cannot connect to 127.0.0.1:1 (none): ConnectionRefusedError")
        return super().open()

    def wait(self, seconds, interrupt):
        self.daemon.stop()  # one round after connecting is enough


def test_outage_is_logged_once_and_the_daemon_reconnects(tmp_path, caplog, monkeypatch):
    import inboxd.daemon as daemon_module
    source = FlakySource(failures=3)
    source.add([make_mail()])
    daemon = Daemon(load_config(write_config(tmp_path)), source=source, transport=FakeTransport())
    source.daemon = daemon
    monkeypatch.setattr(daemon_module, "MAX_BACKOFF_SECONDS", 0.01)
    waits = []
    monkeypatch.setattr(daemon._wakeup, "wait", lambda seconds=None: waits.append(seconds))
    with caplog.at_level(logging.DEBUG, logger="inboxd"):
        daemon.run()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot connect" in errors[0].getMessage()
    assert waits == [1.0, 0.01, 0.01]  # backoff, capped
    assert "reconnected to" in caplog.text and Item.select().count() == 1


class HiccupSource(FakeSource):
    """An IDLE that once returns a response nobody can read, then mail arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.opened, self.daemon = 0, None

    def open(self) -> int:
        self.opened += 1
        return super().open()

    def wait(self, seconds, interrupt) -> None:
        if self.opened == 1:
            self.add([make_mail(subject="Arrived during the garbled IDLE")])
            raise SourceHiccup("IMAP: an IDLE response could not be read (unexpected response); reconnecting")
        self.daemon.stop()  # the reconnected round has read the mail


def test_an_unreadable_idle_response_reconnects_at_once_without_an_error(tmp_path, caplog, monkeypatch):
    source = HiccupSource()
    daemon = Daemon(load_config(write_config(tmp_path)), source=source, transport=FakeTransport())
    source.daemon = daemon
    waits = []
    monkeypatch.setattr(daemon._wakeup, "wait", lambda seconds=None: waits.append(seconds))
    with caplog.at_level(logging.INFO, logger="inboxd"):
        daemon.run()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == [] and waits == []  # no backoff
    assert "could not be read" in caplog.text and source.opened >= 2
    assert Item.get().subject == "Arrived during the garbled IDLE"


class DayPerWaitSource(FakeSource):
    """Each wait lasts a moment of real time and a day of the daemon's clock; stops after a few."""

    def __init__(self, clock, rounds: int) -> None:
        super().__init__()
        self.clock, self.rounds, self.waits, self.daemon = clock, rounds, [], None

    def wait(self, seconds, interrupt) -> None:
        self.waits.append(seconds)
        interrupt.wait(seconds)
        self.clock.advance(timedelta(days=1))
        if len(self.waits) >= self.rounds:
            self.daemon.stop()


def test_run_catches_up_on_start_then_sweeps_between_waits(tmp_path, monkeypatch):
    import inboxd.daemon as daemon_module
    from conversation_helpers import Conversation

    from inboxd.clock import FixedClock
    from inboxd.models import Outbox
    monkeypatch.setattr(daemon_module, "SWEEP_SECONDS", 0.05)
    clock = FixedClock(datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc))  # Monday 10:00 Berlin
    source = DayPerWaitSource(clock, rounds=8)
    config = load_config(write_config(tmp_path, extra="\n[service]\ndigest = false\n"))
    daemon = Daemon(config, clock=clock, source=source, transport=FakeTransport())
    source.daemon = daemon
    Conversation(daemon).owner_says("#take")  # due Thursday 10:00
    clock.moment = datetime(2026, 11, 26, 9, 30, tzinfo=timezone.utc)  # the daemon was down until Thursday 10:30
    daemon.run()
    jobs = {kind: [r.created_at for r in Outbox.select().where(Outbox.kind == kind)]
            for kind in ("owner_reminder", "deadline_notice", "escalation", "status_update")}
    start = datetime(2026, 11, 26, 9, 30, tzinfo=timezone.utc)
    assert jobs["owner_reminder"] == jobs["deadline_notice"] == jobs["escalation"] == [start]  # on start, once
    assert len(jobs["status_update"]) >= 1 and min(jobs["status_update"]) > start  # later, between waits
    assert all(0 <= seconds <= 0.05 for seconds in source.waits)  # no wait outlasts the next sweep
    assert daemon.sender.transport.sent  # and the outbox thread sent what the sweeps queued


def test_a_failing_sweep_is_logged_once_until_it_runs_again(tmp_path, caplog, monkeypatch):
    daemon = Daemon(load_config(write_config(tmp_path)), source=FakeSource(), transport=FakeTransport())
    broken = [True]

    def run(now, worker=""):
        if broken[0]:
            raise RuntimeError("database is locked")
        return []
    monkeypatch.setattr(daemon.sweeper, "run", run)
    with caplog.at_level(logging.INFO, logger="inboxd"):
        for _ in range(5):
            assert daemon.sweep() == []
        broken[0] = False
        daemon.sweep()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "database is locked" in caplog.text and "the jobs run again" in caplog.text
