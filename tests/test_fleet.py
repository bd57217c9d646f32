"""One `inboxd run` serving every team of a teams.d deployment (issue 17): a Daemon per team in one process.

On Dovecot: `inboxd run` as a process of its own over IT and HR (tests/test_teams.py's teams, each its own
Dovecot user); without servers: the fleet on in-memory mailboxes, the shared notifier, /healthz and /metrics.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from inboxd import http, logs
from inboxd.cli import cli
from inboxd.clock import FixedClock
from inboxd.config import load_teams
from inboxd.daemon import Daemon
from inboxd.errors import LoginRefused, LoginsRefused
from inboxd.fleet import Fleet
from inboxd.health import Health
from inboxd.instance import AlreadyRunning, InstanceLock
from inboxd.metrics import REGISTRY, Live
from inboxd.models import Item, open_database, team, use_team
from inboxd.outbox import FakeTransport
from inboxd.servers import append_messages
from inboxd.servers.base import free_port
from inboxd.source import FakeSource
from inboxd.systemd import Notifier, TeamsNotifier
from prometheus_client import generate_latest

from helpers import http_get, make_mail, start_run, wait_for, write_config
from test_teams import HR_ACK, HR_FILE, Teams, text

MONDAY_10 = __import__("conftest").MONDAY_10


# --- `inboxd run` over two teams on Dovecot ---------------------------------------------------------------------------

class Running:
    """`inboxd run` without --team as a process (and group) of its own, serving /healthz on a free port."""

    def __init__(self, teams: Teams, tmp_path: Path) -> None:
        self.port = free_port()
        teams.path.write_text(teams.path.read_text() + f'\n[http]\nlisten = "127.0.0.1:{self.port}"\n')
        self.log = tmp_path / "run.log"
        self.process = start_run(teams.path, tmp_path, self.log)

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.port, path)

    def children(self) -> list[int]:
        """The delivery processes of `inboxd run` (each team's thread started its own: children of that thread)."""
        found = [int(p) for task in Path(f"/proc/{self.process.pid}/task").glob("*")
                 for p in (task / "children").read_text().split()]
        return [pid for pid in found if b"inboxd-delivery" in Path(f"/proc/{pid}/cmdline").read_bytes()]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM to the whole group, as systemd's stop sends it."""
        os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(60)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[[Teams], Running]]:
    started: list[Running] = []

    def start(teams: Teams) -> Running:
        started.append(Running(teams, tmp_path))
        return started[-1]

    yield start
    for run in started:  # also when an assertion failed: no daemon outlives the test
        run.kill()



def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1].startswith("Z")  # ended, not reaped yet


def acks_to(teams: Teams, requester: str) -> list:
    return [m for m in teams.sent() if m["To"] == requester]


def test_one_run_serves_both_teams_and_sigterm_stops_them_all(tmp_path, mailbox, hr_mailbox, smtp_capture, running):
    teams = Teams(tmp_path, "", mailbox, hr_mailbox, smtp_capture)
    run = running(teams)
    wait_for(lambda: run.get("/healthz")[0] == 200, f"/healthz green\n{run.output()}")
    assert run.get("/healthz")[1].startswith("ok: all 2 teams\n")
    append_messages(mailbox, [make_mail("ken@example.org", "Laptop is slow", to="help@example.org")])
    append_messages(hr_mailbox, [make_mail("mia@example.org", "Holiday request", to="hr@example.org")])
    sent: list = []
    wait_for(lambda: sent.extend(teams.sent()) or {"ken@example.org", "mia@example.org"} <= {m["To"] for m in sent},
             f"both acknowledgements\n{run.output()}")
    ken, mia = (next(m for m in sent if m["To"] == who) for who in ("ken@example.org", "mia@example.org"))
    open_database(teams.configs["IT"].database_url, migrate=False)
    it_item, hr_item = Teams.items("IT")[0], Teams.items("HR")[0]
    assert ken["Subject"] == f"[IT-{it_item.id}] We have your request: Laptop is slow"
    assert mia["Subject"] == f"[HR-{hr_item.id}] We have your request: Holiday request"
    assert HR_ACK in text(mia) and HR_ACK not in text(ken)
    status, metrics = run.get("/metrics")
    assert status == 200 and 'inboxd_healthy{team="HR"} 1.0' in metrics and 'inboxd_healthy{team="IT"} 1.0' in metrics
    assert 'inboxd_items{status="new",team="HR"} 1.0' in metrics
    children = run.children()
    assert len(children) == 2  # a delivery process per team
    assert run.stop() == 0, run.output()
    assert all(gone(pid) for pid in children)
    assert "Traceback" not in run.output()


def test_a_team_whose_login_is_refused_stops_alone_and_healthz_names_it(tmp_path, mailbox, hr_mailbox, smtp_capture,
                                                                       running):
    teams = Teams(tmp_path, "", mailbox, hr_mailbox, smtp_capture)
    (tmp_path / "teams.d" / "hr-password").write_text("wrong")
    hr_file = tmp_path / "teams.d" / "hr.toml"
    hr_file.write_text(hr_file.read_text().replace('user = "hr"', 'user = "hr"\npassword_file = "hr-password"'))
    run = running(teams)
    append_messages(mailbox, [make_mail("ken@example.org", "Laptop is slow", to="help@example.org")])
    wait_for(lambda: acks_to(teams, "ken@example.org"), f"IT's acknowledgement\n{run.output()}")
    wait_for(lambda: "team HR has stopped (the other 1 team(s) go on): IMAP: login as 'hr'" in run.output(), "HR stopped")
    status, health = run.get("/healthz")
    assert status == 503 and health.startswith("not ok: HR of 2 teams\n"), health
    assert "\nHR: stopped: inboxd" in health and "\nIT: ok since" in health
    # IT goes on after HR has stopped.
    append_messages(mailbox, [make_mail("rosa@example.org", "Screen flickers", to="help@example.org")])
    wait_for(lambda: acks_to(teams, "rosa@example.org"), f"IT's next acknowledgement\n{run.output()}")
    assert run.process.poll() is None
    assert run.stop() == 0, run.output()


def test_once_without_team_reads_both_mailboxes(tmp_path, mailbox, hr_mailbox, smtp_capture):
    teams = Teams(tmp_path, "", mailbox, hr_mailbox, smtp_capture)
    append_messages(mailbox, [make_mail("ken@example.org", "Laptop is slow", to="help@example.org")])
    append_messages(hr_mailbox, [make_mail("mia@example.org", "Holiday request", to="hr@example.org")])
    result = CliRunner().invoke(cli, ["--config", str(teams.path), "once"])
    assert result.exit_code == 0, result.output
    assert [i.subject for i in Teams.items("IT")] == ["Laptop is slow"]
    assert [i.subject for i in Teams.items("HR")] == ["Holiday request"]
    assert {m["To"] for m in teams.sent()} >= {"ken@example.org", "mia@example.org"}
    result = CliRunner().invoke(cli, ["--config", str(teams.path), "sweep", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert [line.split(" sweep as of")[0] for line in result.output.splitlines() if "sweep as of" in line] == \
        ["HR:", "IT:"]


# --- `check` over every team ----------------------------------------------------------------------------------------

def test_check_without_team_reports_the_second_teams_broken_rule_by_file_and_line(tmp_path):
    path = write_config(tmp_path)
    (tmp_path / "teams.d").mkdir()
    (tmp_path / "teams.d" / "hr.toml").write_text(HR_FILE.format(port=1143).replace(
        'templates = "hr-templates"', 'rules = "hr-rules"'))
    (tmp_path / "teams.d" / "it.toml").write_text("")
    (tmp_path / "teams.d" / "hr-rules").mkdir()
    (tmp_path / "teams.d" / "hr-rules" / "10-pay.toml").write_text(
        'version = 1\n\n[[rule]]\nname = "payslips"\nmatch.subject = { regex = "(payslip" }\nqueue = "default"\n')
    result = CliRunner().invoke(cli, ["--config", str(path), "check"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if "10-pay.toml" in line]
    assert result.output.startswith("error: HR: ") and errors and f"{tmp_path}/teams.d/hr-rules/10-pay.toml:5" in \
        errors[0], result.output
    assert "\nIT: ok: " in result.output  # the first team's problems stop nobody else's check
    result = CliRunner().invoke(cli, ["--config", str(path), "check", "--team", "IT"])
    assert result.exit_code == 0 and result.output.startswith("ok: "), result.output


# --- the fleet on in-memory mailboxes -------------------------------------------------------------------------------

class RefusingSource(FakeSource):
    """A mailbox whose server refuses every login."""

    def open(self) -> int:
        raise LoginRefused("IMAP: login refused by 127.0.0.1 for hr")


def two_daemons(tmp_path: Path, hr_source: FakeSource, hr_extra: str = "") -> tuple[Daemon, Daemon]:
    """IT and HR (tests/test_teams.py's) on in-memory mailboxes; `hr_extra`: more of HR's [mailbox]."""
    path = write_config(tmp_path)
    (tmp_path / "teams.d").mkdir()
    (tmp_path / "teams.d" / "hr.toml").write_text(HR_FILE.format(port=1144).replace(
        'templates = "hr-templates"', "").replace('user = "hr"\n', f'user = "hr"\n{hr_extra}'))
    (tmp_path / "teams.d" / "it.toml").write_text("")
    hr, it = load_teams(path)
    clock = FixedClock(MONDAY_10)
    return (Daemon(it, clock=clock, source=FakeSource(), transport=FakeTransport()),
            Daemon(hr, clock=clock, source=hr_source, transport=FakeTransport()))


@pytest.fixture
def quick_backoff(monkeypatch):
    """The waits between refused logins start at a hundredth of a second instead of one."""
    original = Daemon._login_refused

    def refused(self, why, server="IMAP"):
        self._backoff = min(self._backoff, 0.01)
        original(self, why, server)
    monkeypatch.setattr(Daemon, "_login_refused", refused)


def test_the_other_team_goes_on_after_one_teams_logins_were_refused(tmp_path, quick_backoff):
    it, hr = two_daemons(tmp_path, RefusingSource())
    systemd = Recorded()
    with hr_stopped_it_going(it, hr, systemd) as (fleet, thread):
        assert isinstance(fleet.stopped["HR"], LoginsRefused) and hr.health.status.state == "stopped"
        assert thread.is_alive() and fleet.notifier.teams["HR"].ended and not fleet.notifier.teams["IT"].ended
        assert [m for m in systemd.sent if m.startswith("READY=1")] == [systemd.sent[0]]
        assert systemd.sent[-1].startswith("STATUS=2 teams: IT watching ") and \
            "; HR stopped: IMAP: login refused by 127.0.0.1 for hr; refused 3 times in a row" in systemd.sent[-1]
        fleet.request_reload()  # SIGHUP: every team still running reloads its rules and templates
        wait_for(lambda: not it.reload_requested.is_set(), "IT reloaded", 30)
    assert not thread.is_alive() and it.health.status.state == "stopped"


@contextmanager
def hr_stopped_it_going(it: Daemon, hr: Daemon, systemd: Notifier) -> Iterator[tuple[Fleet, threading.Thread]]:
    """Both teams running in a fleet until HR has stopped; then IT still takes a new mail; stopped at the end."""
    fleet = Fleet([it, hr], systemd)
    thread = threading.Thread(target=fleet.run)
    thread.start()
    try:
        wait_for(lambda: "HR" in fleet.stopped, "HR stopped", 30)
        it.source.add([make_mail("ken@example.org", "Laptop is slow")])
        wait_for(lambda: Item.select().where(Item.team == "IT").count() == 1, "IT's item", 30)
        yield fleet, thread
    finally:
        fleet.stop()
        thread.join(30)


def test_a_team_whose_mailbox_awaits_adopt_stops_alone(tmp_path):
    hr_source = FakeSource()
    hr_source.add([make_mail("mia@example.org", "Holiday request", to="hr@example.org")])
    it, hr = two_daemons(tmp_path, hr_source, hr_extra='first_contact = "stop"\n')
    systemd = Recorded()
    with hr_stopped_it_going(it, hr, systemd) as (fleet, thread):
        assert " adopt now --team HR\n" in str(fleet.stopped["HR"]) and not Item.select().where(Item.team == "HR").exists()
    assert not thread.is_alive() and systemd.sent.count("STOPPING=1\nSTATUS=stopping: sending what is queued") == 1


def test_when_every_team_has_stopped_run_ends_with_the_refused_logins(tmp_path, quick_backoff):
    it, hr = two_daemons(tmp_path, RefusingSource())
    it.source = RefusingSource()
    with pytest.raises(LoginsRefused, match=r"every team has stopped:\n(HR|IT): .*\n(HR|IT): ") as raised:
        Fleet([it, hr], Notifier(None)).run()
    assert raised.value.exit_code == 3  # systemd's RestartPreventExitStatus: no restart into a lockout


def test_standing_by_for_one_teams_older_inboxd_holds_back_that_team_only(tmp_path):
    it, hr = two_daemons(tmp_path, FakeSource())
    older = InstanceLock(it.config)  # a lone inboxd still at work on IT's mailbox
    older.acquire()
    with pytest.raises(AlreadyRunning):
        Fleet([it, hr], Notifier(None)).run()  # without --standby: refused at once, nothing started
    fleet = Fleet([it, hr], Notifier(None))
    thread = threading.Thread(target=fleet.run, kwargs={"standby": True})
    thread.start()
    try:
        hr.source.add([make_mail("mia@example.org", "Holiday request", to="hr@example.org")])
        it.source.add([make_mail("ken@example.org", "Laptop is slow")])
        wait_for(lambda: Item.select().where(Item.team == "HR").count() == 1, "HR served while IT stands by", 30)
        assert not Item.select().where(Item.team == "IT").exists()
        older.release()  # the older inboxd stops: IT is taken over
        wait_for(lambda: Item.select().where(Item.team == "IT").count() == 1, "IT taken over", 30)
    finally:
        older.release()
        fleet.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_an_unexpected_failure_of_one_team_stops_the_process(tmp_path, caplog):
    class Broken(FakeSource):
        def new_uids(self, after: int) -> list[int]:
            raise RuntimeError("a bug")

    it, hr = two_daemons(tmp_path, Broken())
    with pytest.raises(RuntimeError, match="a bug"):
        Fleet([it, hr], Notifier(None)).run()
    assert it.health.status.state == hr.health.status.state == "stopped"
    assert "team HR: its loop failed; inboxd stops, for systemd to start it again" in caplog.text


# --- the shared notifier, /healthz and /metrics ---------------------------------------------------------------------

class Recorded(Notifier):
    """A notifier that keeps what it would send."""

    def __init__(self, watchdog_seconds: float | None = None) -> None:
        super().__init__(None, watchdog_seconds)
        self.sent: list[str] = []

    def _send(self, message: str) -> None:
        self.sent.append(message)


def test_ready_once_every_team_has_started_and_a_status_naming_each():
    systemd = Recorded()
    shared = TeamsNotifier(systemd, ["HR", "IT"])
    shared.teams["HR"].ready("connecting to hr@imap/INBOX")
    assert systemd.sent == []
    shared.teams["IT"].ready("connecting to help@imap/INBOX")
    shared.teams["HR"].status("IMAP unavailable, retrying: refused")
    assert systemd.sent == ["READY=1\nSTATUS=2 teams: HR connecting to hr@imap/INBOX; IT connecting to help@imap/INBOX",
                            "STATUS=2 teams: HR IMAP unavailable, retrying: refused; IT connecting to help@imap/INBOX"]


def test_the_watchdog_is_fed_only_while_every_team_still_watching_turns():
    systemd = Recorded(watchdog_seconds=0.2)
    shared = TeamsNotifier(systemd, ["HR", "IT"])
    for key in ("HR", "IT"):
        shared.teams[key].ready("connecting")
    shared.teams["IT"].alive()
    assert systemd.sent.count("WATCHDOG=1") == 1
    time.sleep(0.15)  # HR silent for more than half the watchdog's interval: its loop may hang
    shared.teams["IT"].alive()
    assert systemd.sent.count("WATCHDOG=1") == 1
    shared.teams["HR"].stopping()  # HR's loop has ended on purpose: it no longer holds the pings back
    shared.teams["IT"].alive()
    assert systemd.sent.count("WATCHDOG=1") == 2 and systemd.sent[-2] == "STATUS=2 teams: HR stopped; IT connecting"


def test_healthz_and_metrics_name_each_team(tmp_path):
    open_database(f"sqlite:///{tmp_path / 'inboxd.db'}")
    healths = {"HR": Health(tmp_path / "hr.json"), "IT": Health(tmp_path / "it.json")}
    healths["IT"].imap_seen()
    healths["HR"].stopped()
    healthy, summary = http.healthz(healths)
    assert not healthy and summary.splitlines()[0] == "not ok: HR of 2 teams"
    assert summary.splitlines()[1].startswith("HR: stopped: inboxd") and summary.splitlines()[2].startswith("IT: ok")
    healths["HR"].imap_seen()
    healths["HR"].ok()
    assert http.healthz(healths)[1].startswith("ok: all 2 teams\nHR: ok since")
    assert http.healthz({"IT": healths["IT"]})[1].startswith("ok since")  # a lone daemon: one line, as before
    live = Live(healths)
    REGISTRY.register(live)
    try:
        scraped = generate_latest(REGISTRY).decode()
    finally:
        REGISTRY.unregister(live)
    assert 'inboxd_healthy{team="HR"} 1.0' in scraped and 'inboxd_imap_connection{state="idle",team="IT"}' in scraped
    assert "inboxd_database_up 1.0" in scraped  # one database for all


def test_each_line_a_teams_thread_logs_starts_with_its_key():
    out = io.StringIO()
    handler = logs._Handler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        logs.name_teams(team)
        use_team("HR")
        logging.getLogger("inboxd.daemon").warning("IMAP: %s unavailable", "hr@imap")
        use_team("")
        logging.getLogger("inboxd.cli").warning("inboxd starting")  # the process's own line
    finally:
        logging.getLogger().removeHandler(handler)
    assert out.getvalue() == "HR: IMAP: hr@imap unavailable\ninboxd starting\n"


def test_report_names_the_teams_when_asked_for_one_it_does_not_serve(tmp_path):
    it, hr = two_daemons(tmp_path, FakeSource())
    app = http._app({"HR": hr.health, "IT": it.health}, [hr.config, it.config])
    answer: list[str] = []
    environ = {"PATH_INFO": "/report", "REMOTE_ADDR": "127.0.0.1", "QUERY_STRING": "team=PAY"}
    body = b"".join(app(environ, lambda status, _: answer.append(status)))
    assert answer == ["404 Not Found"] and body == b"/report?team=KEY: the teams are HR, IT\n"
    answer.clear()
    pages: list[bytes] = []  # in a thread of its own, as the server's: /report opens a connection of its own
    thread = threading.Thread(target=lambda: pages.append(b"".join(
        app(environ | {"QUERY_STRING": "team=it"}, lambda status, _: answer.append(status)))))
    thread.start()
    thread.join(30)
    assert answer == ["200 OK"] and b"IT Help" in pages[0] and b"HR" not in pages[0]
