"""`inboxd backup` and `inboxd migrate`."""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

from . import backup
from .backup import sqlite_path
from .config import Config, load_teams
from .errors import InboxdError
from .instance import AlreadyRunning, InstanceLock
from .models import LATEST_SCHEMA, adopt_rows, connect_database, upgrade, write_transaction
from .settings import shown_url
from .tracker import Tracker

log = logging.getLogger(__name__)


def backup_database(config: Config, target: Path) -> str:
    """Copy the SQLite database to `target` (a new file) while inboxd may run; the line to print."""
    url = config.database_url
    path = sqlite_path(url)
    if path is None:
        raise InboxdError(f"inboxd backup copies a SQLite database; {shown_url(url)} is PostgreSQL: use "
                          f"pg_dump --format=custom --file={target} with the same URL")
    if not path.is_file():
        raise InboxdError(f"database {shown_url(url)}: no such file (a mistyped path?)")
    backup.copy(path, target)
    try:
        with closing(sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True)) as copy:
            version = copy.execute("SELECT MAX(version) FROM schemaversion").fetchone()[0]
            items = copy.execute("SELECT COUNT(*) FROM item").fetchone()[0]
    except sqlite3.Error as exc:
        raise InboxdError(f"{target}: copied, but it holds no inboxd data ({exc})") from None
    return f"backed up {shown_url(url)} (schema {version}, {items} item(s)) to {target}"


def migrate_database(config: Config) -> str:
    """Bring the schema up to date (a SQLite database with data is backed up first); the line to print."""
    url = config.database_url
    database = connect_database(url)
    locks: list[InstanceLock] = []
    try:
        for team in teams_of(config):  # every team's daemon works on the database whose schema changes
            lock = InstanceLock(team)
            try:
                lock.acquire()
            except AlreadyRunning:
                raise InboxdError(f"another inboxd is working on {team.mailbox.label} with this database: stop it "
                                  f"first (a migration changes the schema under it)") from None
            locks.append(lock)
        before, saved = upgrade(database, url)
        owner = adopt_old_rows(config)
        if 0 < before < 9:  # the figures' business minutes need the calendar, which migrations do not have
            with database.atomic():
                filled = Tracker.fill_first_response_minutes(owner.calendar)
            log.info("database: business minutes to the first response filled in for %d item(s)", filled)
    finally:
        for lock in locks:
            lock.release()
    where = shown_url(url)
    if before == LATEST_SCHEMA:
        return f"database {where}: schema version {LATEST_SCHEMA}, up to date; nothing to do"
    if before == 0:
        return f"database {where}: created at schema version {LATEST_SCHEMA}"
    return (f"database {where}: schema version {before} brought up to {LATEST_SCHEMA}"
            + (f"; the copy taken before is {saved}" if saved else ""))


def adopt_old_rows(config: Config) -> Config:
    """Rows from before teams (team "") become one team's, logged with counts; that team's config (or `config`).

    Of a teams.d deployment, the team whose mailbox the old mail was read from, else the first; of a lone
    config, its own. Run wherever migrations run with a config at hand: the daemon's start, `inboxd migrate`.
    """
    teams = teams_of(config)
    with write_transaction():
        adopted = adopt_rows([(team.team.key, team.mailbox.label) for team in teams])
    if adopted is None:
        return config
    key, counts = adopted
    log.info("database: rows from before teams adopted by team %s: %s", key,
             ", ".join(f"{count} {table}" for table, count in counts.items()))
    return next(team for team in teams if team.team.key == key)


def teams_of(config: Config) -> tuple[Config, ...]:
    """Every team of the deployment `config` is one team of (itself alone, without teams.d)."""
    return load_teams(config.path, secrets=False) if config.team_file is not None else (config,)
