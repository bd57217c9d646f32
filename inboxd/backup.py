"""Copies of a SQLite database, taken with SQLite's online backup API while inboxd may be writing to it."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from .errors import InboxdError


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///` URL; None for PostgreSQL or an in-memory database."""
    if not url.startswith("sqlite:///"):
        return None
    name = url.removeprefix("sqlite:///")
    return None if name in ("", ":memory:") else Path(name)


def copy(source: Path, target: Path) -> None:
    """Copy the database at `source` to a new file `target`, consistent as of one moment.

    The online backup API reads pages under SQLite's own locking, so the copy holds every committed
    transaction and no half of one (a file copy of a database in WAL mode can miss the WAL's pages).
    The copy is written beside `target` and renamed into place: a reader never sees half of it.
    """
    if target.exists():
        raise InboxdError(f"{target} already exists: choose another name (a backup never overwrites a file)")
    partial = target.with_name(target.name + ".partial")
    try:
        with closing(sqlite3.connect(source)) as live, closing(sqlite3.connect(partial)) as out:
            live.backup(out)
            out.execute("PRAGMA journal_mode = DELETE")  # the copy is one file, without -wal and -shm beside it
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as exc:
        partial.unlink(missing_ok=True)
        raise InboxdError(f"could not back up {source} to {target}: {exc}") from exc  # outage() reads the cause


def before_upgrade(source: Path, version: int, now: datetime | None = None) -> Path:
    """The automatic copy taken before migrations: beside the database, named by its schema version and the time."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = source.with_name(f"{source.name}.schema{version}-{stamp}.bak")
    copy(source, target)
    return target
