"""One inboxd per mailbox and database: a second one refuses to start, or stands by until the first stops."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

from .backup import sqlite_path
from .config import Config
from .errors import InboxdError

log = logging.getLogger(__name__)
STANDBY_POLL_SECONDS = 2.0


class AlreadyRunning(InboxdError):
    """Another inboxd already works on this mailbox with this database."""


class LockSession:
    """One PostgreSQL session holding the advisory locks of every team a worker serves, each taken and let go alone:
    a session per lock would cost a worker a database connection per team (the limit at many teams)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: Any = None
        self._statements = threading.Lock()  # the teams' threads take and let go at any moment

    def try_lock(self, key: int) -> bool:
        """Take the lock `key` if it is free (a failed statement drops the session, and every lock it held)."""
        return bool(self._run("SELECT pg_try_advisory_lock(%s)", key))

    def unlock(self, key: int) -> None:
        """Let the lock `key` go; a session gone has let it go already."""
        try:
            self._run("SELECT pg_advisory_unlock(%s)", key)
        except Exception as exc:  # the session died (a restart, a fence): its locks went with it
            log.debug("instance lock %s: let go with its session (%s)", key, exc)

    def close(self) -> None:
        with self._statements:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _run(self, sql: str, key: int) -> Any:
        import psycopg2  # a connection of its own, used by every team's thread (peewee's are one per thread)
        with self._statements:
            while True:
                fresh = self._connection is None
                if fresh:
                    self._connection = psycopg2.connect(self.url.replace("postgres://", "postgresql://", 1))
                    self._connection.autocommit = True
                try:
                    with self._connection.cursor() as cursor:
                        cursor.execute(sql, (key,))
                        return cursor.fetchone()[0]
                except Exception:
                    self._connection.close()  # its locks are gone with it (a restart of the database, a fence)
                    self._connection = None
                    if fresh:
                        raise  # a new session failed too: the database is unavailable now


class InstanceLock:
    """An exclusive lock named after the mailbox: a lock file beside SQLite, an advisory lock in PostgreSQL.

    Both vanish with the process that holds them, so a killed daemon never leaves a stale lock.
    """

    def __init__(self, config: Config, role: str = "", session: LockSession | None = None) -> None:
        """The lock of the daemon on this mailbox; a `role` ("delivery") is a lock of its own beside it; `session`:
        held on that shared PostgreSQL session rather than a connection of its own."""
        self.url, self.label = config.database_url, config.mailbox.label
        digest = hashlib.sha256((self.label + (f"#{role}" if role else "")).encode()).hexdigest()
        self.key = int(digest[:15], 16)  # fits PostgreSQL's bigint
        database = Path(self.url.removeprefix("sqlite:///"))
        self.file = database.with_name(f"{database.name}.{digest[:8]}.lock") if self.url.startswith("sqlite") \
            else None
        self.where = f"the database {database}" if self.file else "its PostgreSQL database"
        self._held: Any = None  # the open lock file, or the session (shared, or its own) holding the advisory lock
        self.session = session
        # SQLite in memory (a dry run's scratch database): no other process can reach it, so nothing to
        # lock, and no ":memory:.….lock" file left in the working folder.
        self.private = self.url.startswith("sqlite") and sqlite_path(self.url) is None

    def acquire(self, standby: bool = False, stop: threading.Event | None = None) -> bool:
        """Take the lock: AlreadyRunning, or with `standby` wait for it (False when `stop` came first)."""
        stop = stop or threading.Event()
        waiting = False
        while not self._try():
            if not standby:
                raise AlreadyRunning(f"another inboxd ({self._holder()}) is already working on {self.label} "
                                     f"with {self.where}; stop it first, or start this one with --standby")
            if not waiting:
                log.info("standing by: another inboxd (%s) works on %s; taking over when it stops",
                         self._holder(), self.label)
                waiting = True
            if stop.wait(STANDBY_POLL_SECONDS):
                return False
        if waiting:
            log.info("the other inboxd has stopped: taking over %s", self.label)
        return True

    def release(self) -> None:
        """Let the next inboxd in."""
        if self._held is not None and self._held is self.session:
            self.session.unlock(self.key)  # shared: this lock only
        elif self._held is not None:
            self._held.close()  # closing the file or the session of its own drops the lock
        self._held = None

    def _try(self) -> bool:
        if self.private:
            return True
        if self.file is not None:
            handle = open(self.file, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            handle.truncate(0)
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            self._held = handle
            return True
        session = self.session or LockSession(self.url)  # a worker's shared one, or a session of its own
        if session.try_lock(self.key):
            self._held = session
            return True
        if session is not self.session:
            session.close()
        return False

    def _holder(self) -> str:
        if self.file is None:
            return f"the session holding advisory lock {self.key}"
        try:
            return self.file.read_text(encoding="utf-8").strip() or "pid unknown"
        except OSError:
            return "pid unknown"
