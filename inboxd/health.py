"""The daemon's health for `inboxd health` and /healthz: a small JSON file, kept outside the database (which
may be what is down), and a look at the database itself."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import peewee as pw

from .config import Config
from .errors import InboxdError
from .leases import holder_host_pid, lease_name
from .models import db, forget_connection, open_read_only
from .settings import shown_url

log = logging.getLogger(__name__)
BEAT_SECONDS = 30.0  # a running daemon rewrites the file at least this often (its loop wakes every minute)
STALE_SECONDS = 300.0  # older than this, the file no longer speaks for a running daemon
# A running daemon reads the mailbox at least once a minute (each wait ends for the sweep), and after
# each batch of mail: a last read older than this is a stalled fetcher, red within two minutes.
STALL_SECONDS = 120.0


@dataclass(frozen=True)
class Status:
    """What the daemon last said about itself; times are ISO 8601 in UTC."""

    state: str  # ok | paused | stopped
    reason: str
    since: str  # when this state began
    updated: str  # when the daemon last wrote the file
    last_imap: str | None  # the last time it read the mailbox
    pid: int
    imap: str = ""  # the connection: idle (IDLE is on), polling, down (lost, retrying), or "" before the first
    waiting: int | None = None  # mails found in the folder and not processed yet, as of last_imap
    last_sweep: str | None = None  # when the jobs last ran through


def status_file(config: Config) -> Path:
    """`[paths] state`/inboxd.<mailbox hash>.health.json; by default beside the SQLite database or the config."""
    folder = config.state_dir
    if folder is None:
        url = config.database_url
        folder = Path(url.removeprefix("sqlite:///")).parent if url.startswith("sqlite:///") else config.path.parent
    digest = hashlib.sha256(config.mailbox.label.encode()).hexdigest()[:8]
    return folder / f"inboxd.{digest}.health.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Health:
    """The daemon's state (ok, or paused with why and since when; the last IMAP activity), written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._temporary = path.with_name(path.name + ".tmp")  # made once: pathlib interns the name it parses
        self.status = Status("ok", "", _now(), _now(), None, os.getpid())
        self._written = 0.0  # time.monotonic() of the last write
        self._failing = False

    @property
    def paused(self) -> bool:
        return self.status.state == "paused"

    def pause(self, reason: str) -> bool:
        """Intake is paused for `reason`; True when it was not paused before."""
        began = not self.paused
        self._set("paused", reason, began)
        return began

    def ok(self) -> bool:
        """Intake runs; True when it was paused before."""
        ended = self.status.state != "ok"
        self._set("ok", "", ended)
        return ended

    def stopped(self) -> None:
        self._set("stopped", "inboxd stopped", True)

    def imap_seen(self) -> None:
        """The mailbox was just read (said at once the first time, then with the next beat)."""
        first = self.status.last_imap is None
        self.status = replace(self.status, last_imap=_now())
        if first:
            self._write()
        else:
            self.beat()

    def connection(self, state: str) -> None:
        """The IMAP connection is now idle, polling or down (said at once when it changes)."""
        if state != self.status.imap:
            self.status = replace(self.status, imap=state)
            self._write()

    def waiting_mail(self, count: int) -> None:
        """The mailbox was just read and `count` mails in it wait to be processed (a change is said at once)."""
        changed = count != self.status.waiting
        self.status = replace(self.status, waiting=count, last_imap=_now())
        if changed:
            self._write()
        else:
            self.beat()

    def swept(self) -> None:
        """The jobs just ran through."""
        self.status = replace(self.status, last_sweep=_now())
        self.beat()

    def beat(self) -> None:
        """Rewrite the file if it is getting old, so that `inboxd health` knows the daemon still runs."""
        if time.monotonic() - self._written >= BEAT_SECONDS:
            self._write()

    def _set(self, state: str, reason: str, changed: bool) -> None:
        self.status = replace(self.status, state=state, reason=reason,
                              since=_now() if changed else self.status.since)
        if changed:
            self._write()
        else:
            self.beat()

    def _write(self) -> None:
        self.status = replace(self.status, updated=_now())
        self._written = time.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._temporary.write_text(json.dumps(asdict(self.status)) + "\n", encoding="utf-8")
            os.replace(self._temporary, self.path)  # a reader sees the old file or the new one, never half of one
        except OSError as exc:  # a full or read-only disk: the file goes stale, and `inboxd health` says so
            (log.debug if self._failing else log.warning)("health: cannot write %s: %s", self.path, exc)
            self._failing = True
            return
        self._failing = False


def read(path: Path) -> Status | None:
    """The status in the file, or None if there is none (or it cannot be read)."""
    try:
        status = Status(**json.loads(path.read_text(encoding="utf-8")))
        for moment in (status.updated, status.since, status.last_imap, status.last_sweep):
            if moment is not None and datetime.fromisoformat(moment).tzinfo is None:
                return None  # written by hand, or by something else: not a status to judge by
        datetime.fromisoformat(status.updated)  # the one moment every status has
    except (OSError, ValueError, TypeError):
        return None
    return status


def verdict(status: Status | None, path: Path, now: datetime, stall: float | None = None) -> tuple[bool, str]:
    """(healthy, one line saying why) for `inboxd health`: healthy is ok, fresh, and reading the mailbox."""
    if status is None:
        return False, f"unknown: no readable status in {path} (has inboxd run with this config?)"
    age = (now - datetime.fromisoformat(status.updated)).total_seconds()
    if status.state == "stopped":
        return False, f"stopped: inboxd (pid {status.pid}) stopped at {status.since}"
    if age > STALE_SECONDS:
        return False, (f"stale: inboxd (pid {status.pid}) last reported {int(age)} s ago, at {status.updated} "
                       f"(not running, hanging, or unable to write {path.parent})")
    if status.state == "paused":
        return False, f"paused since {status.since}: {status.reason}"
    read = (now - datetime.fromisoformat(status.last_imap)).total_seconds() if status.last_imap else None
    if read is None or read > (stall or STALL_SECONDS):  # running, but the mailbox cannot be reached, or a read hangs
        return False, (f"not reading mail: the mailbox was last read "
                       f"{f'{int(read)} s ago, at {status.last_imap}' if read is not None else 'never'} "
                       f"(IMAP {status.imap or 'not connected yet'}; see the log for IMAP errors)")
    swept = (now - datetime.fromisoformat(status.last_sweep)).total_seconds() if status.last_sweep else None
    if swept is not None and swept > STALE_SECONDS:
        return False, f"jobs not running: the last sweep was {int(swept)} s ago, at {status.last_sweep} (see the log)"
    return True, f"ok since {status.since} (pid {status.pid}; mailbox last read {status.last_imap or 'never'})"


@dataclass(frozen=True)
class DatabaseLook:
    """What `inboxd health` and /healthz see in the database: reachable or why not, and the outbox."""

    error: str | None  # None: reachable
    pending: int | None = None  # mails in the outbox waiting to be sent
    dead: int | None = None  # mails given up on
    strays: dict[str, int] = field(default_factory=dict)  # pending mails by team, of teams not in the config

    @property
    def reachable(self) -> bool:
        return self.error is None


def look(url: str | None = None, teams: Collection[str] | None = None) -> DatabaseLook:
    """Count the outbox in `url` opened read-only (never bound: a daemon may run in this process), or in the
    bound database from a thread of the daemon's; an error is one line, not raised. `teams`: every team of the
    config, whose mail someone sends: the others' pending mail is counted apart."""
    database = None
    counts: dict[str, int] = {}
    strays: dict[str, int] = {}
    try:
        database = open_read_only(url) if url is not None else db
        for key, status, count in database.execute_sql(
                "SELECT team, status, COUNT(*) FROM outbox WHERE status IN ('pending', 'dead') GROUP BY team, status"):
            counts[status] = counts.get(status, 0) + count
            if teams is not None and status == "pending" and key not in teams:
                strays[key] = count
    except InboxdError as exc:
        return DatabaseLook(str(exc))
    except pw.PeeweeException as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        return DatabaseLook(f"database {shown_url(url)}: {why}" if url else why)
    finally:
        if database is db:
            forget_connection()  # this thread's connection: /healthz runs each request in a new thread
        elif database is not None:
            database.close()
    return DatabaseLook(None, counts.get("pending", 0), counts.get("dead", 0), strays)


def strays_said(database: DatabaseLook) -> str | None:
    """What `inboxd health` says of pending mail no team of the config sends (a team's file removed), if any."""
    if not database.strays:
        return None
    teams = ", ".join(f"{key} ({count})" for key, count in sorted(database.strays.items()))
    return (f"{sum(database.strays.values())} mail(s) of team(s) not in the configuration: {teams}: sent by no one "
            f"(each goes with its team's SMTP): put the team back, or give them up (docs/cli.md, health)")


def holders(configs: Sequence[Config]) -> dict[str, str]:
    """On PostgreSQL: the worker holding each team's mailbox lease now, by team key."""
    database = open_read_only(configs[0].database_url)
    try:
        by_lease = dict(database.execute_sql("SELECT name, holder FROM lease WHERE expires_at > now()").fetchall())
    finally:
        database.close()
    return {c.team.key: by_lease[lease_name(c)] for c in configs if lease_name(c) in by_lease}


def worker_verdict(status: Status | None, holder: str | None, here: str) -> tuple[bool, str] | None:
    """On PostgreSQL, what the lease says of a team: None when a worker of this machine (`here`: its host name)
    holds it and its status file speaks; else whether some live worker watches the mailbox."""
    if holder is None:
        return False, "no live worker holds its mailbox (see `inboxd workers`, and the workers' logs)"
    if status is not None and holder_host_pid(holder) == (here, status.pid):
        return None
    return True, f"watched by worker {holder} (its own /healthz and log say more)"


def details(status: Status | None, database: DatabaseLook | None, now: datetime) -> list[str]:
    """The lines under the verdict: IMAP, mail waiting, the jobs, the outbox and the database."""
    def ago(moment: str | None) -> str:
        return f"{moment} ({int((now - datetime.fromisoformat(moment)).total_seconds())} s ago)" if moment else "never"

    lines = []
    if status is not None:
        lines += [f"last IMAP activity: {ago(status.last_imap)}",
                  f"IMAP connection:    {IMAP_STATES.get(status.imap, status.imap)}",
                  f"mails waiting:      {'unknown' if status.waiting is None else status.waiting}",
                  f"last sweep:         {ago(status.last_sweep)}"]
    if database is None:
        return lines
    if database.reachable:
        lines += [f"outbox:             {database.pending} pending, {database.dead} dead",
                  *([f"not sent:           {said}"] if (said := strays_said(database)) else []),
                  "database:           reachable"]
    else:
        lines.append(f"database:           unreachable: {database.error}")
    return lines


IMAP_STATES = {"idle": "IDLE alive", "polling": "polling (no IDLE)", "down": "down, reconnecting",
               "": "not connected yet"}
