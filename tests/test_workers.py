"""Several workers (inboxd/workers.py): the teams a worker serves follow the leases it holds; a lost lease writes
nothing more; each sweep once per moment across workers.

Without servers: workers over `FakeLeases` on one board and in-memory mailboxes, rounds driven by hand and the
board's clock moved by the test. The sweep's claim runs on PostgreSQL. `inboxd run` processes on Dovecot and
PostgreSQL are in tests/test_workers_dovecot.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from inboxd.cli import cli
from inboxd.clock import FixedClock
from inboxd.config import Config, load_teams
from inboxd.daemon import Daemon
from inboxd.http import healthz
from inboxd.leases import TTL_SECONDS, Board, FakeLeases, LeaseLost
from inboxd.models import Item, JobRun, Notice, open_database
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource
from inboxd.systemd import Notifier
from inboxd.workers import Beat, Workers, changes, lease_name, turning

from helpers import make_mail, write_config

MONDAY_10 = __import__("conftest").MONDAY_10
TEAM_FILE = """\
[team]
name = "Team {n}"
address = "t{n}@example.org"
ref_prefix = "T{n}"

[mailbox]
user = "t{n}"
"""


def teams_config(tmp_path: Path, count: int = 4, url: str = "", smtp_port: int = 1025) -> Path:
    """A teams.d deployment of `count` teams T1…, each on mailbox user t1…; SQLite unless `url`."""
    tmp_path.mkdir(exist_ok=True)
    path = write_config(tmp_path, smtp_port=smtp_port)
    shared = path.read_text().replace('address = "help@example.org"\n', "")  # what the teams share: no alias
    path.write_text(shared.replace('url = "sqlite:///inboxd.db"', f'url = "{url}"') if url else shared)
    (tmp_path / "teams.d").mkdir()
    for n in range(1, count + 1):
        (tmp_path / "teams.d" / f"t{n}.toml").write_text(TEAM_FILE.format(n=n))
    return path


def wait_for(condition: Callable[[], object], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.01)


def test_changes_start_what_is_held_and_stop_what_is_not():
    assert changes(running={"mailbox:a", "mailbox:b"}, held={"mailbox:b", "mailbox:c"}) == (["mailbox:c"],
                                                                                             ["mailbox:a"])
    assert changes(running=(), held=()) == ([], [])


class Fakes:
    """Workers of one deployment on one board: in-memory mailboxes, one per team, shared by the workers."""

    def __init__(self, tmp_path: Path) -> None:
        self.configs = load_teams(teams_config(tmp_path))
        open_database(self.configs[0].database_url)
        self.sources = {config.team.key: FakeSource() for config in self.configs}
        self.board = Board()
        self.made: list[Workers] = []

    def daemon(self, config: Config) -> Daemon:
        return Daemon(config, clock=FixedClock(MONDAY_10), source=self.sources[config.team.key],
                      transport=FakeTransport(), database_open=True)

    def worker(self, name: str) -> Workers:
        self.made.append(Workers(self.configs, FakeLeases(self.board, name), make=self.daemon))
        return self.made[-1]

    def serving(self, worker: Workers) -> set[str]:
        """The teams whose loop runs in this worker now."""
        return {running.config.team.key for running in worker.teams.values()
                if running.daemon is not None and not running.stopping.is_set()}

    def end(self) -> None:
        for worker in self.made:
            worker._end_all()


@pytest.fixture
def fakes(tmp_path):
    made = Fakes(tmp_path)
    yield made
    made.end()


def test_a_lone_worker_serves_every_team_and_a_second_takes_half(fakes):
    a = fakes.worker("a")
    a.round()
    wait_for(lambda: fakes.serving(a) == {"T1", "T2", "T3", "T4"})
    b = fakes.worker("b")
    b.round()  # b is alive now, but every lease is a's
    assert fakes.serving(b) == set()
    a.round()  # a sees two workers: it gives back what is over its share
    wait_for(lambda: fakes.serving(a) == {"T1", "T2"} and not any(t.thread.is_alive() for t in a.teams.values()
                                                                     if t.config.team.key in ("T3", "T4")))
    b.round()
    wait_for(lambda: fakes.serving(b) == {"T3", "T4"})
    assert fakes.serving(a) == {"T1", "T2"}


def test_a_worker_cut_off_from_the_database_stops_before_another_takes_over(fakes):
    a, b = fakes.worker("a"), fakes.worker("b")
    a.round(), b.round(), a.round(), b.round()
    wait_for(lambda: fakes.serving(a) == {"T1", "T2"} and fakes.serving(b) == {"T3", "T4"})
    fakes.board.down.add("a")
    fakes.board.now += TTL_SECONDS - 0.5  # past a's own deadline (TTL - margin), not yet the lease's expiry
    a.round(), b.round()
    assert fakes.serving(a) == set()  # a stopped its teams on its own clock
    assert fakes.serving(b) == {"T3", "T4"}  # and b may not take them yet
    fakes.board.now += 1.0  # the leases have expired
    b.round()
    wait_for(lambda: fakes.serving(b) == {"T1", "T2", "T3", "T4"})


def test_a_planned_stop_gives_the_leases_back_at_once(fakes):
    a, b = fakes.worker("a"), fakes.worker("b")
    a.round(), b.round(), a.round(), b.round()
    wait_for(lambda: fakes.serving(b) == {"T3", "T4"})
    stopper = threading.Timer(0.2, b.stop)
    stopper.start()
    b.run()  # returns once stopped: its teams ended, its leases and its worker row given back
    assert fakes.board.leases.keys() == {lease_name(c) for c in fakes.configs if c.team.key in ("T1", "T2")}
    a.round()  # the board's clock has not moved: nothing expired, b's leases were freed
    wait_for(lambda: fakes.serving(a) == {"T1", "T2", "T3", "T4"})


def test_a_mail_is_not_processed_once_the_lease_is_gone(fakes):
    daemon = fakes.daemon(fakes.configs[0])
    daemon.source.add([make_mail(to="t1@example.org")])
    daemon.leased = lambda: False
    uidvalidity = daemon.source.open()
    with pytest.raises(LeaseLost):
        daemon.ingest(uidvalidity)
    assert Item.select().count() == 0 and daemon.stopping.is_set()
    assert daemon.source.new_uids(0) == [1]  # left on the server, not marked done: the next holder reads it


def test_two_workers_sweeping_one_team_at_the_same_moment_send_each_notice_once(tmp_path, postgres):
    from conversation_helpers import Conversation
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('url = "sqlite:///inboxd.db"',
                                             f'url = "{postgres.create_database("inboxd_two_sweeps")}"'))
    config = load_teams(path)[0]
    clock = FixedClock(MONDAY_10)
    one, two = (Daemon(config, clock=clock, source=FakeSource(), transport=FakeTransport()) for _ in range(2))
    one.worker, two.worker = "worker-a", "worker-b"
    Conversation(one).owner_says("#take")
    clock.advance(timedelta(days=7, minutes=5))  # a week on: the reminder, notice, escalation and digests are due
    results: dict[str, list] = {}
    threads = [threading.Thread(target=lambda d=d: results.__setitem__(d.worker, d.sweep())) for d in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = sorted(due.kind for found in results.values() for due in found)
    assert sent == ["deadline_notice", "digest", "digest", "escalation", "owner_reminder"]
    assert sorted(len(found) for found in results.values()) == [0, 5]  # one sweep ran; the other found it claimed
    claims = list(JobRun.select())
    assert [(c.job, c.moment) for c in claims] == [("sweep:IT", clock.now().replace(second=0, microsecond=0))]
    assert claims[0].worker == next(name for name, found in results.items() if found)
    assert Notice.select().count() == 5
    clock.advance(timedelta(minutes=1))
    assert two.sweep() == []  # the next minute is claimed anew; the notice rows say all was sent


def test_workers_on_sqlite_says_there_is_one_process(tmp_path):
    result = CliRunner().invoke(cli, ["--config", str(teams_config(tmp_path)), "workers"])
    assert result.exit_code == 0, result.output
    assert "SQLite" in result.output and "one process" in result.output


class Told(Notifier):
    """A notifier that keeps what it would tell systemd."""

    def __init__(self) -> None:
        super().__init__(None)
        self.said: list[str] = []

    def _send(self, message: str) -> None:
        self.said.append(message)


def test_ready_once_the_first_round_is_done_and_a_worker_holding_none_is_healthy(fakes):
    a = fakes.worker("a")
    a.round()
    told = Told()
    b = Workers(fakes.configs, FakeLeases(fakes.board, "b"), make=fakes.daemon, notifier=told)
    stopper = threading.Timer(0.2, b.stop)
    stopper.start()
    b.run()  # every lease is a's: b stands by, holding none
    assert told.said[0] == "READY=1\nSTATUS=worker b: 0 of 4 mailbox(es)"
    assert told.said[-1].startswith("STOPPING=1")
    assert healthz(b.healths, named=True) == (True, "ok: no team's mailbox held here")


def test_the_watchdog_is_fed_only_while_every_team_loop_here_turns(fakes):
    hung, turning_one, starting = Beat(), Beat(), Beat()
    hung.turned, turning_one.turned = 100.0, 149.0
    assert turning([turning_one, starting], now=150.0, window=150.0)  # a loop still starting holds nothing back
    assert not turning([hung, turning_one], now=251.0, window=150.0)  # one silent for over half of WatchdogSec
    a = fakes.worker("a")
    a.round()
    wait_for(lambda: all(t.beat.turned is not None for t in a.teams.values()) and len(a.teams) == 4)
    assert all(t.daemon is not None and t.daemon.notifier is t.beat for t in a.teams.values())  # each loop's turns
