"""`inboxd once --dry-run`: what a run would do, done by the same daemon on a scratch database, sent nowhere.

Nothing changes on the server: the folder is EXAMINEd (read-only: no flag, not even \\Seen), no folder
is created, and what would be moved or flagged is only noted. Nothing changes in the database: a
SQLite file is copied with the online backup API into a temporary folder and the run works on the
copy; PostgreSQL works in one transaction that is rolled back.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory

import peewee as pw

from .adopt import FirstContact, adoption, describe
from .clock import Clock, SystemClock
from .config import Config
from .daemon import Daemon
from .errors import InboxdError
from .models import MIGRATIONS, Outbox, db, team
from .pipeline import Outcome
from .source import Fetched, ImapSource, MailSource


class ReadOnlySource:
    """A source whose mail is read and never marked: what a run would move or flag is only noted."""

    def __init__(self, inner: MailSource) -> None:
        self.inner = inner
        self.done: list[int] = []
        self.aside: list[int] = []

    def open(self) -> int:
        return self.inner.open()

    def new_uids(self, after: int) -> list[int]:
        return self.inner.new_uids(after)

    def arrivals(self, uids: list[int]) -> dict[int, datetime]:
        return self.inner.arrivals(uids)

    def sizes(self, uids: list[int]) -> dict[int, int]:
        return self.inner.sizes(uids)

    def fetch(self, uids: list[int], sizes: Mapping[int, int] | None = None) -> list[Fetched]:
        return self.inner.fetch(uids, sizes)

    def mark_done(self, uids: list[int]) -> None:
        self.done.extend(uids)

    def set_aside(self, uids: list[int]) -> None:
        self.aside.extend(uids)

    def wait(self, seconds: float, interrupt: threading.Event) -> None:
        self.inner.wait(seconds, interrupt)

    def close(self) -> None:
        self.inner.close()


class NoTransport:
    """The transport of a dry run: its outbox is never sent."""

    def send(self, sender: str, recipients: list[str], raw: bytes) -> dict[str, str]:
        raise AssertionError("a dry run sends nothing")

    def close(self) -> None:
        pass


def preview_once(config: Config, clock: Clock | None = None, source: MailSource | None = None,
                 adopting: tuple[str | datetime, bool] | None = None) -> str:
    """A readable report of what `inboxd once` would do now: per mail, the item, the mails and to whom, the folder.

    `adopting` (a choice and whether to acknowledge): what `inboxd adopt` would do, at a first contact.
    """
    with _scratch(config) as scratch:
        folder = ReadOnlySource(source or ImapSource(config.mailbox, config.limits.max_message_bytes, read_only=True))
        daemon = Daemon(scratch, clock=clock or SystemClock(), source=folder, transport=NoTransport())
        try:
            with db.atomic() as transaction:
                report = _walk(daemon, folder, adopting)
                transaction.rollback()
        finally:
            db.close()
    return report


@contextmanager
def _scratch(config: Config) -> Iterator[Config]:
    """The config with a scratch database (a SQLite copy; PostgreSQL as it is) and a temporary state folder."""
    with TemporaryDirectory(prefix="inboxd-dry-run-") as folder:
        url = config.database_url
        if url.startswith("sqlite:///"):
            copy = Path(folder) / "inboxd.db"
            _copy_sqlite(Path(url.removeprefix("sqlite:///")), copy)
            url = f"sqlite:///{copy}"
        else:
            _schema_current(url)
        yield replace(config, database_url=url, state_dir=Path(folder))


def _copy_sqlite(source: Path, copy: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API); none yet, an empty one."""
    if not source.exists():
        return  # a dry run before the first run: the scratch database starts empty, and no file appears
    with closing(sqlite3.connect(source)) as original, closing(sqlite3.connect(copy)) as target:
        original.execute("PRAGMA query_only = 1")
        original.backup(target)


def _schema_current(url: str) -> None:
    """A dry run cannot upgrade a PostgreSQL schema (that would change the database): it refuses instead."""
    from playhouse.db_url import connect
    database = connect(url.replace("postgres://", "postgresql://", 1))
    try:
        applied = {row[0] for row in database.execute_sql("SELECT version FROM schemaversion")}
    except pw.DatabaseError:
        applied = set()
    finally:
        database.close()
    if missing := sorted({version for version, _ in MIGRATIONS} - applied):
        raise InboxdError(f"once --dry-run: the database lacks schema migration(s) {missing}, and a dry run changes "
                          f"nothing, not even the schema: upgrade it first (a real run does), then try again")


def _walk(daemon: Daemon, folder: ReadOnlySource, adopting: tuple[str | datetime, bool] | None) -> str:
    """Read the new mail and run the jobs as `once` would, noting what each mail caused; the report."""
    config, now = daemon.config, daemon.clock.now()
    waiting = Outbox.select().where((Outbox.team == team()) & (Outbox.status == "pending")
                                    & (Outbox.next_attempt_at <= now)).count()
    seen = [Outbox.select(pw.fn.MAX(Outbox.id)).scalar() or 0]
    lines: list[str] = []

    def queued() -> list[str]:
        rows = list(Outbox.select().where((Outbox.id > seen[0]) & (Outbox.team == team())).order_by(Outbox.id))
        seen[0] = rows[-1].id if rows else seen[0]
        return [f"{row.kind} to {', '.join(row.recipients)}: {row.subject}" for row in rows]

    def note(outcome: Outcome) -> None:
        lines.append(f"\nmail {outcome.message_id} from {outcome.sender or '(no sender)'}: "
                     f"{outcome.subject or '(no subject)'}")
        lines.append(f"  {_what(outcome)}")
        lines.extend(f"  would send {mail}" for mail in queued() or ["nothing"])
        lines.append(f"  would be {_where(outcome, config)}")

    daemon.listeners.append(note)
    uidvalidity = folder.open()
    try:
        if adopting is not None:
            found = daemon.survey()
            adopted = adoption(*adopting, found)
            daemon.adopt(uidvalidity, adopted)  # refused, as by `adopt`, where inboxd already reads the folder
            lines.append(f"as `inboxd adopt` would: {describe(adopted, found, config)}")
        count = daemon.ingest(uidvalidity)
    except FirstContact as exc:
        raise FirstContact(f"once --dry-run: a run would stop here, and so does this one:\n{exc}") from None
    finally:
        folder.close()
    daemon.sweep()
    jobs = queued()
    head = [f"once --dry-run: what `inboxd once` would do now, as of {now.isoformat(timespec='seconds')}; "
            f"nothing was changed and nothing sent", f"{count} new mail(s) in {config.mailbox.label}"]
    tail = ["", f"jobs due: {len(jobs)} mail(s)", *(f"  would send {mail}" for mail in jobs)]
    if waiting:
        tail.append(f"outbox: {waiting} mail(s) queued earlier are due and would be sent")
    return "\n".join(head + lines + tail)


def _what(outcome: Outcome) -> str:
    """What a mail would become, in a line."""
    if outcome.kind == "item":
        return f"would create {outcome.ref}: {outcome.reason}"
    if outcome.kind == "parked":
        return f"would be parked (kept for a person): {outcome.reason}"
    if outcome.ref:
        return f"on {outcome.ref}: {outcome.kind}: {outcome.reason}"
    return f"{outcome.kind}: {outcome.reason}"


def _where(outcome: Outcome, config: Config) -> str:
    """Where a run would leave the mail on the server."""
    mailbox = config.mailbox
    folder = mailbox.done_folder if outcome.mark_done else mailbox.attention_folder
    if folder:
        return f"moved to the folder {folder!r}"
    flags = "\\Seen $InboxdDone" if outcome.mark_done else "\\Flagged"
    return f"flagged {flags}, left in {mailbox.folder!r}"
