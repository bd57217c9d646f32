"""Peewee models, the database connection and versioned schema migrations."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import peewee as pw
from playhouse.db_url import connect
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as migrate_schema

from . import backup
from .backup import sqlite_path
from .domain import ACK_WITHIN, OPEN_STATUSES
from .errors import DatabaseOutage, InboxdError
from .settings import shown_url

log = logging.getLogger(__name__)
db = pw.DatabaseProxy()
# The team this thread works for (its key, the reference prefix): what every row it writes belongs to, and
# what every question it asks is about. Each thread sets it once (a new thread starts without it: "").
TEAM: ContextVar[str] = ContextVar("team", default="")


def use_team(key: str) -> None:
    """This thread (and what it calls) works for this team from now on."""
    TEAM.set(key)


def team() -> str:
    """The key of the team this thread works for ("": none set, as in a test of one module)."""
    return TEAM.get()
BUSY_TIMEOUT_SECONDS = 30.0  # SQLite waits this long for another process's lock, then the database is "unavailable"


class WriteTurn:
    """Turns for writing: among this process's threads, and with the other processes of a SQLite file.

    SQLite's busy handler sleeps in steps of up to 100 ms, so a writer that only writes now and then
    (the outbox) would starve beside one that writes back to back (the ingest). A thread lock, and
    across processes `flock` on a file beside the database tried every few milliseconds, hand the
    turn on within about that long of the last commit.
    """

    def __init__(self) -> None:
        self._threads = threading.Lock()
        self._file: int | None = None

    def use(self, database: Path | None) -> None:
        """Take turns on this SQLite file (None: PostgreSQL or memory, whose writers wait on rows, not files)."""
        if self._file is not None:
            os.close(self._file)
            self._file = None
        if database is not None:
            try:
                self._file = os.open(f"{database}.turn", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                pass  # not ours to create (another user's read-only look): SQLite's busy wait still guards

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._threads:
            if self._file is None:
                yield
                return
            self._take(self._file)
            try:
                yield
            finally:
                fcntl.flock(self._file, fcntl.LOCK_UN)

    @staticmethod
    def _take(turn: int) -> None:
        """The turn, within SQLite's own patience: a holder stuck for longer (stopped, hung) is an outage.

        Tried every few milliseconds rather than waited for in `flock`, which has no timeout: a stopped
        delivery process holding the turn would otherwise hang the intake for good, without a word.
        """
        pause, deadline = 0.0002, 0.0
        while True:
            try:
                fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            now = time.monotonic()
            if not deadline:
                deadline = now + BUSY_TIMEOUT_SECONDS
            elif now > deadline:
                raise DatabaseOutage(f"database unavailable: another inboxd process has held its write turn for "
                                     f"{BUSY_TIMEOUT_SECONDS:.0f} s (stopped or hung?)")
            time.sleep(pause)
            pause = min(pause * 2, 0.004)


_write_turn = WriteTurn()


@contextmanager
def write_transaction(turn: bool = True) -> Iterator[None]:
    """A write transaction, taken in turns (WriteTurn; `turn=False`: PostgreSQL's row-locking writers, which
    wait on rows, not on each other); an unavailable database is a DatabaseOutage."""
    try:
        with _write_turn() if turn else nullcontext(), db.atomic():
            yield
    except (pw.DatabaseError, pw.InterfaceError) as exc:  # InterfaceError: the rollback of a lost connection failed
        why = outage(exc)
        if why is None:
            raise
        forget_connection()
        raise DatabaseOutage(f"database unavailable: {why}") from exc


# SQLite's words for a database it cannot use now (busy, locked, full, its disk or file gone), as
# opposed to a statement the data made fail (a constraint, a value it cannot bind).
_SQLITE_OUTAGE = ("locked", "busy", "disk is full", "disk i/o error", "unable to open database file")


def outage(exc: BaseException) -> str | None:
    """Why the database is unavailable, if this error says so; None for an error of the data.

    Looks at the driver's error under peewee's, and at what a failed rollback replaced (SQLite
    rolls back by itself on a full disk, and peewee's own rollback then fails).
    """
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        driver = getattr(error, "orig", error)  # peewee keeps the driver's error there
        classes = {f"{c.__module__}.{c.__name__}" for c in type(driver).__mro__}
        if classes & {"psycopg2.OperationalError", "psycopg2.InterfaceError"}:  # server down, connection lost
            return " ".join(str(driver).split()) or type(driver).__name__
        if isinstance(driver, sqlite3.OperationalError) and any(w in str(driver).lower() for w in _SQLITE_OUTAGE):
            return str(driver)
        error = error.__cause__ or error.__context__
    return None


def forget_connection() -> None:
    """Drop this thread's connection after an outage: the next query opens a fresh one (a lost server)."""
    try:
        db.close()
    except Exception:  # still in a transaction, or the lost connection would not even close: leave it
        pass



class UtcDateTimeField(pw.Field):
    """An aware datetime stored as naive UTC, the same on SQLite and PostgreSQL."""

    field_type = "TIMESTAMP"

    def db_value(self, value: datetime | None) -> Any:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")

    def python_value(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)


class JsonField(pw.TextField):
    """A JSON value kept as text."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value)

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = db


class Item(BaseModel):
    """A tracked request."""

    team = pw.CharField(default=team)  # the team's key; item ids are global: IT-5 and HR-6, never both 5
    subject = pw.TextField()
    requester = pw.CharField(index=True)
    requester_name = pw.TextField(default="")
    owner = pw.CharField(null=True, index=True)
    queue = pw.CharField(index=True)
    status = pw.CharField(default="new", index=True)
    priority = pw.CharField(default="normal")
    tags = JsonField(default=list)
    rule = pw.CharField(null=True)
    created_at = UtcDateTimeField()
    due_at = UtcDateTimeField(null=True)
    acknowledged_at = UtcDateTimeField(null=True)
    acknowledged_quickly = pw.BooleanField(null=True)  # the acknowledgement left within ACK_WITHIN of created_at
    first_response_at = UtcDateTimeField(null=True)
    resolved_at = UtcDateTimeField(null=True)
    satisfaction = pw.IntegerField(null=True)
    secret = pw.CharField(default="")  # proves a command came from someone who got our mail
    waiting_on = pw.CharField(null=True)  # whom a `waiting` item waits for: "requester" or a name
    on_track = pw.BooleanField(default=False)  # the owner confirmed due_at (#ontrack)
    follows = pw.ForeignKeyField("self", null=True, backref="followers", on_delete="SET NULL")
    last_told_at = UtcDateTimeField(null=True)  # the requester's last mail from us: status updates count from it
    paused_at = UtcDateTimeField(null=True)  # waiting on the requester since: the date's clock stands still
    requested_due_at = UtcDateTimeField(null=True)  # the date the requester asked for, if they named one
    participants = JsonField(default=list)  # others on the request's To/Cc: their replies count as the requester's side
    first_response_minutes = pw.IntegerField(null=True)  # business minutes from created_at to first_response_at
    heard_at = UtcDateTimeField(null=True)  # the requester last heard from us: a mail to them left (silences)
    language = pw.CharField(default="")  # the template set its requester is answered in; "": the team's default

    class Meta:
        # The sweep's questions, each of one team: open items by date, and by how long their requester heard
        # nothing; and `stats`' periods. Led by the team, so that one team's question reads its own rows only.
        indexes = ((("team", "status", "due_at"), False), (("team", "status", "last_told_at"), False),
                   (("team", "created_at"), False), (("team", "resolved_at"), False),
                   (("team", "queue", "id"), False))  # the round-robin's "who got this queue's last item?"


class Message(BaseModel):
    """Every mail in or out, keyed by Message-ID and content fingerprint per direction."""

    team = pw.CharField(default=team)  # the same mail to two teams' addresses is a request to each
    message_id = pw.CharField()
    fingerprint = pw.CharField(default="")
    direction = pw.CharField()  # in | out
    item = pw.ForeignKeyField(Item, null=True, backref="messages", on_delete="SET NULL")
    mailbox = pw.CharField(default="")
    uid = pw.BigIntegerField(null=True)
    sender = pw.CharField(default="")
    subject = pw.TextField(default="")
    raw_size = pw.IntegerField(default=0)
    outcome = pw.CharField(default="")  # item | skipped | declined | redirected | ignored | parked | sent
    reason = pw.TextField(default="")
    summary = pw.TextField(default="")
    body = pw.TextField(default="")  # incoming: the new text of a reply, or the request; outgoing: the text
    created_at = UtcDateTimeField()

    class Meta:
        indexes = ((("team", "direction", "message_id", "fingerprint"), True), (("message_id",), False))


class Event(BaseModel):
    """The audit trail: who did what to which item, and why."""

    team = pw.CharField(default=team)
    item = pw.ForeignKeyField(Item, null=True, backref="events", on_delete="CASCADE")
    message = pw.ForeignKeyField(Message, null=True, on_delete="SET NULL")
    at = UtcDateTimeField()
    actor = pw.CharField()
    kind = pw.CharField()
    detail = pw.TextField(default="")
    trace = JsonField(null=True)

    class Meta:
        indexes = ((("kind", "at"), False),)  # `stats`: reopened items in a period


class Outbox(BaseModel):
    """An outgoing mail, rendered in full, waiting to be sent or given up on."""

    team = pw.CharField(default=team)  # whose SMTP sends it
    item = pw.ForeignKeyField(Item, null=True, backref="outgoing", on_delete="SET NULL")
    kind = pw.CharField()
    recipients = JsonField()
    sender = pw.CharField()
    subject = pw.TextField()
    message_id = pw.CharField(unique=True)
    raw = pw.BlobField()
    acknowledges = pw.BooleanField(default=False)  # sending it sets the item's acknowledged_at
    recipient = pw.CharField(default="")  # the first recipient, for counting what one address got
    automatic = pw.BooleanField(default=False)  # an automatic answer to a sender's mail (ack, decline…)
    status = pw.CharField(default="pending", index=True)  # pending | sent | dead
    attempts = pw.IntegerField(default=0)
    next_attempt_at = UtcDateTimeField(index=True)
    last_error = pw.TextField(default="")
    created_at = UtcDateTimeField()
    sent_at = UtcDateTimeField(null=True)

    class Meta:
        indexes = ((("recipient", "created_at"), False),)


class Notice(BaseModel):
    """One proactive mail sent (or decided against) for an item's date or a week: never twice.

    Item notices are unique per (item, kind, for_date), so a new promised date starts a new cycle;
    digests have no item and are unique per (team, kind, audience, for_date).
    """

    team = pw.CharField(default=team)
    item = pw.ForeignKeyField(Item, null=True, backref="notices", on_delete="CASCADE")
    kind = pw.CharField()  # owner_reminder | deadline_notice | escalation | status_update | digest
    for_date = UtcDateTimeField()  # the promised date, the last mail the requester got, or the digest's week
    audience = pw.CharField(default="")  # a digest's recipient: "team" or a member's address
    created_at = UtcDateTimeField()

    class Meta:
        indexes = ((("item", "kind", "for_date"), True), (("kind", "for_date"), False))


Notice.add_index(Notice.index(Notice.team, Notice.kind, Notice.audience, Notice.for_date, unique=True,
                              where=Notice.item.is_null(), name="notice_team_digest_once"))


class DateMove(BaseModel):
    """A promised date moved later by a member (#eta): the figures count the moves, and those told in time."""

    item = pw.ForeignKeyField(Item, backref="date_moves", on_delete="CASCADE")
    at = UtcDateTimeField(index=True)
    old_due = UtcDateTimeField(index=True)
    new_due = UtcDateTimeField()


class Silence(BaseModel):
    """A requester left without word longer than `update_every`, written when the silence ends (`stats`)."""

    item = pw.ForeignKeyField(Item, backref="silences", on_delete="CASCADE")
    heard_at = UtcDateTimeField()  # the requester's last word from us before it
    overdue_at = UtcDateTimeField(index=True)  # when `update_every` ran out: the period the silence counts in
    ended_at = UtcDateTimeField()  # when they heard from us again
    minutes = pw.IntegerField()  # business minutes from heard_at to ended_at


class Absence(BaseModel):
    """A member away until a date (`#away until DATE`): assignment skips them, escalations say so."""

    member = pw.CharField(unique=True)
    until = UtcDateTimeField()
    since = UtcDateTimeField()


class MailboxState(BaseModel):
    """How far inboxd has read one mailbox folder, and what became of the mail there at first contact (adopt.py)."""

    mailbox = pw.CharField(unique=True)
    uidvalidity = pw.BigIntegerField()
    last_uid = pw.BigIntegerField(default=0)
    backlog_uid = pw.BigIntegerField(default=0)  # the highest UID at first contact: mail up to it is the backlog
    backlog_since = UtcDateTimeField(null=True)  # backlog mail that arrived before this is left alone
    backlog_ack = pw.BooleanField(default=True)  # false: backlog mail becomes items with no mail sent (--no-ack)


class ServerTimeField(pw.DateTimeField):
    """A moment the database writes with its own clock (`now()`), aware: only the database compares it."""

    field_type = "TIMESTAMPTZ"


class Lease(BaseModel):
    """Which worker watches a mailbox (`mailbox:<label>`), until when by the database's clock (leases.py)."""

    name = pw.CharField(primary_key=True)
    holder = pw.CharField()
    expires_at = ServerTimeField()


class Worker(BaseModel):
    """A worker that said it is alive: live while `expires_at` is ahead of the database's clock (leases.py)."""

    name = pw.CharField(primary_key=True)
    started_at = ServerTimeField()
    expires_at = ServerTimeField()


class JobRun(BaseModel):
    """A timed job run at a moment by one worker: the primary key lets only one claim it (leases.claim_run)."""

    job = pw.CharField()
    moment = UtcDateTimeField()
    worker = pw.CharField(default="")
    claimed_at = UtcDateTimeField()

    class Meta:
        primary_key = pw.CompositeKey("job", "moment")


class SchemaVersion(BaseModel):
    """The applied schema migrations."""

    version = pw.IntegerField(primary_key=True)
    applied_at = UtcDateTimeField()


M = TypeVar("M", bound=BaseModel)
_COMPOSED: dict[object, str] = {}  # per database dialect (? or %s placeholders): cleared on open


def composed(key: object, query: Callable[[], pw.Query]) -> str:
    """The SQL of a query that only ever changes in its parameters, composed once.

    peewee composes SQL anew for every query, and on the per-mail path that cost more CPU than
    SQLite took to run the statements.
    """
    sql = _COMPOSED.get(key)
    if sql is None:
        sql = _COMPOSED[key] = query().sql()[0]
    return sql


def create(model: type[M], **values: Any) -> M:
    """`Model.create`, with each INSERT statement composed once rather than for every row."""
    for name, field in model._meta.fields.items():
        if name not in values and field.default is not None:
            values[name] = field.default() if callable(field.default) else field.default
    # In declaration order: the order peewee writes the columns in.
    columns = tuple(f.name for f in model._meta.sorted_fields if f.name in values)
    sql = composed((model, columns), lambda: model.insert(values))
    fields = model._meta.fields
    cursor = db.execute_sql(sql, [fields[name].db_value(values[name]) for name in columns])
    instance = model(**values)
    instance.id = cursor.fetchone()[0] if db.obj.returning_clause else cursor.lastrowid
    return instance


def seen_inbound(message_id: str, fingerprint: str, old_fingerprint: str = "", raw_size: int = 0
                 ) -> tuple[int, str, int | None, int | None] | None:
    """(id, outcome, item id, uid) of the record of this incoming mail, if any: the per-mail duplicate check.

    A record made before fingerprints covered the whole body (`InboundMessage.old_fingerprint`) counts when
    its size is the same too: the same mail read again, not another that differs in a file or a letter.
    """
    columns = (Message.id, Message.outcome, Message.item, Message.uid)
    sql = composed("seen_inbound", lambda: Message.select(*columns).where(
        (Message.team == "") & (Message.direction == "in") & (Message.message_id == "")
        & ((Message.fingerprint == "") | ((Message.fingerprint == "") & (Message.raw_size == 0)))))
    return db.execute_sql(sql, [team(), "in", message_id, fingerprint, old_fingerprint or fingerprint,
                                raw_size]).fetchone()


def automatic_mails_since(recipient: str, since: datetime) -> int:
    """How many automatic answers went to this address after `since`: the flood cap's count, per mail.

    Across teams: a sender flooding two aliases is capped once, so no two teams can be made to loop.
    """
    sql = composed("automatic_mails_since", lambda: Outbox.select(pw.fn.COUNT(Outbox.id)).where(
        (Outbox.recipient == "") & (Outbox.automatic == True) & (Outbox.created_at > datetime.now())))  # noqa: E712
    fields = Outbox._meta.fields
    return db.execute_sql(sql, [recipient, fields["automatic"].db_value(True),
                                fields["created_at"].db_value(since)]).fetchone()[0]


def requests_since(requester: str, since: datetime) -> int:
    """How many items this address opened after `since`, with any team: the flood batching's count, per mail."""
    sql = composed("requests_since", lambda: Item.select(pw.fn.COUNT(Item.id)).where(
        (Item.requester == "") & (Item.created_at > datetime.now())))
    return db.execute_sql(sql, [requester, Item._meta.fields["created_at"].db_value(since)]).fetchone()[0]


def _unindexed(field: pw.Field) -> pw.ColumnBase:
    """The field as SQLite's `+field`: no index answers a term on it. PostgreSQL plans by its statistics."""
    return pw.NodeList((pw.SQL("+"), field), glue="") if isinstance(db.obj, pw.SqliteDatabase) else field


def same_text_requests(requester: str, text: str, since: datetime) -> list[tuple[int, str]]:
    """(item id, subject) of each request this address opened after `since` with exactly this text, per mail.

    CROSS JOIN keeps SQLite to the requester's few items first: left to choose, it read the record of every
    incoming mail by the direction index (0.5 ms a mail at 1,000 items, and growing with the table). The
    order is that index's (Message-ID, fingerprint), so which earlier item a repeat is said to repeat stays.
    `+team` (no index for that term) keeps it on the requester's index, not the team's (team, created_at),
    which reads every item of the team in the window: 30 % more CPU per request at 10,000 (bench/README.md).
    """
    sql = composed("same_text_requests", lambda: Item.select(Message.item, Message.subject)
                    .join(Message, pw.JOIN.CROSS, on=None)
                    .where((Message.item == Item.id) & (Item.requester == "") & (Item.created_at > datetime.now())
                           & (_unindexed(Item.team) == "") & (Message.direction == "in") & (Message.outcome == "item")
                           & (Message.body == ""))
                    .order_by(Message.message_id, Message.fingerprint))
    when = Item._meta.fields["created_at"].db_value(since)
    return db.execute_sql(sql, [requester, when, team(), "in", "item", text]).fetchall()


def item_mails_since(item_id: int, since: datetime) -> int:
    """How many mails this item put in the outbox after `since`: the per-item bound's count, per mail."""
    sql = composed("item_mails_since", lambda: Outbox.select(pw.fn.COUNT(Outbox.id)).where(
        (Outbox.item == 0) & (Outbox.created_at > datetime.now())))
    return db.execute_sql(sql, [item_id, Outbox._meta.fields["created_at"].db_value(since)]).fetchone()[0]


def last_owner(queue: str, members: tuple[str, ...]) -> str | None:
    """Who of these members got this team's queue's last assigned item: the round-robin's question, per new item."""
    sql = composed(("last_owner", len(members)), lambda: Item.select(Item.owner).where(
        (Item.team == "") & (Item.queue == "") & Item.owner.in_([""] * len(members))).order_by(Item.id.desc()).limit(1))
    row = db.execute_sql(sql, [team(), queue, *members, 1]).fetchone()
    return row[0] if row is not None else None


def open_counts(members: tuple[str, ...]) -> dict[str, int]:
    """How many open items each of these members owns, in any team (their whole load): least-loaded's question."""
    sql = composed(("open_counts", len(members)), lambda: Item.select(Item.owner, pw.fn.COUNT(Item.id)).where(
        Item.owner.in_([""] * len(members)) & Item.status.in_(list(OPEN_STATUSES))).group_by(Item.owner))
    return dict(db.execute_sql(sql, [*members, *(str(s) for s in OPEN_STATUSES)]).fetchall())


def members_away(now: datetime) -> list[tuple[str, datetime]]:
    """(member, back on) of every `#away` still running: asked for each new item an `assign` rule places."""
    sql = composed("members_away", lambda: Absence.select(Absence.member, Absence.until).where(
        Absence.until > datetime.now()))
    until = Absence._meta.fields["until"]
    return [(member, until.python_value(back)) for member, back in db.execute_sql(sql, [until.db_value(now)])]


ALL_MODELS = [Item, Message, Event, Outbox, MailboxState, Notice, Absence, DateMove, Silence]


def _v1_initial(database: pw.Database) -> None:
    database.create_tables(ALL_MODELS)


def _add_missing(database: pw.Database, model: type[BaseModel], names: tuple[str, ...],
                 index: tuple[str, ...] = ()) -> None:
    """Add the columns (and the index) a database created by an older version lacks; a new one has them."""
    migrator, table = SchemaMigrator.from_database(database), model._meta.table_name
    have = {c.name for c in database.get_columns(table)}
    fields = [model._meta.fields[name] for name in names]
    steps = [migrator.add_column(table, f.column_name, f) for f in fields if f.column_name not in have]
    if index and f"{table}_{'_'.join(index)}" not in {i.name for i in database.get_indexes(table)}:
        steps.append(migrator.add_index(table, index, False))
    migrate_schema(*steps)


def _v2_conversations(database: pw.Database) -> None:
    """Columns for threads and keywords."""
    _add_missing(database, Item, ("secret", "waiting_on", "on_track", "follows"))
    _add_missing(database, Message, ("body",), index=("message_id",))
    for item in Item.select(Item.id).where(Item.secret == ""):
        Item.update(secret=new_secret()).where(Item.id == item.id).execute()


def _v3_flood_cap(database: pw.Database) -> None:
    """Who each outgoing mail went to, and whether it was an automatic answer: the per-sender cap counts them."""
    _add_missing(database, Outbox, ("recipient", "automatic"), index=("recipient", "created_at"))


def _v4_promises(database: pw.Database) -> None:
    """Columns and tables for dates, reminders, updates and digests."""
    _add_missing(database, Item, ("last_told_at", "paused_at", "requested_due_at"), index=("status", "due_at"))
    _add_missing(database, Item, (), index=("status", "last_told_at"))
    database.create_tables([Notice, Absence])
    # The requester last heard from us with the latest mail addressed to them (or when the item began).
    latest = (Outbox.select(pw.fn.MAX(Outbox.created_at))
              .where((Outbox.item == Item.id) & (Outbox.recipient == Item.requester)))
    Item.update(last_told_at=pw.fn.COALESCE(latest, Item.created_at)).where(Item.last_told_at.is_null()).execute()
    # Items already past their date when the jobs arrive are not escalated one by one (a lead would
    # get one mail per old item at once): their requesters get status updates, and the digest lists them.
    now = datetime.now(UTC)
    late = Item.select(Item.id, Item.due_at).where(Item.status.in_(OPEN_STATUSES) & (Item.due_at < now))
    rows = [{"item": item.id, "kind": kind, "for_date": item.due_at, "created_at": now}
            for item in late for kind in ("owner_reminder", "deadline_notice", "escalation")]
    for start in range(0, len(rows), 300):
        Notice.insert_many(rows[start:start + 300]).execute()
    if rows:
        log.info("database: %d open item(s) were already past their date; they are not escalated one by one "
                 "(the weekly digest lists them)", len(rows) // 3)


def _v5_member_secrets(database: pw.Database) -> None:
    """Longer item secrets: each member's reply address is now derived from one (64 bits each).

    Reply addresses in mail sent before the upgrade stop working; a member replies to a newer mail.
    """
    for item in Item.select(Item.id).where(pw.fn.LENGTH(Item.secret) < 32):
        Item.update(secret=new_secret()).where(Item.id == item.id).execute()


def _v6_participants(database: pw.Database) -> None:
    """Who else was on a request: mail from anyone not on it is a note, never news from the requester's side."""
    _add_missing(database, Item, ("participants",))


def _v7_held_announcements(database: pw.Database) -> None:
    """An index for the sweep's question "which new items wait to be announced in a batch?"."""
    _add_missing(database, Notice, (), index=("kind", "for_date"))


def _v8_first_contact(database: pw.Database) -> None:
    """What `inboxd adopt` chose for the mail already in a folder at first contact; older folders have no backlog."""
    _add_missing(database, MailboxState, ("backlog_uid", "backlog_since", "backlog_ack"))


def _v9_figures(database: pw.Database) -> None:
    """What `inboxd stats` asks in SQL: minutes to the first response, date moves, silences, indexes by time.

    Items answered before this version get their minutes from `inboxd migrate` (it has the calendar);
    silences are recorded from this version on, counted from the last mail each requester was sent.
    """
    _add_missing(database, Item, ("first_response_minutes", "heard_at", "acknowledged_quickly"), index=("created_at",))
    _add_missing(database, Item, (), index=("resolved_at",))
    _add_missing(database, Event, (), index=("kind", "at"))
    database.create_tables([DateMove, Silence])
    latest = (Outbox.select(pw.fn.MAX(Outbox.sent_at))
              .where((Outbox.item == Item.id) & (Outbox.recipient == Item.requester)))
    Item.update(heard_at=pw.fn.COALESCE(latest, Item.created_at)).where(Item.heard_at.is_null()).execute()
    acknowledged = Item.select(Item.id, Item.created_at, Item.acknowledged_at).where(
        Item.acknowledged_at.is_null(False) & Item.acknowledged_quickly.is_null())
    quick = {row.id: row.acknowledged_at - row.created_at <= ACK_WITHIN for row in acknowledged}
    for answer in (True, False):
        ids = [item_id for item_id, value in quick.items() if value is answer]
        for start in range(0, len(ids), 500):
            Item.update(acknowledged_quickly=answer).where(Item.id.in_(ids[start:start + 500])).execute()


def new_secret() -> str:
    """A per-item key (128 bits) from which each member's reply-address token is derived (threads.member_token)."""
    return secrets.token_hex(16)


SEARCH_INDEX = "message_search"  # the full-text index of the mail people wrote (inboxd/search.py)


def fts5_available(database: pw.Database) -> bool:
    """This SQLite has FTS5 (a build without it searches with LIKE)."""
    return bool(database.execute_sql("SELECT sqlite_compileoption_used('ENABLE_FTS5')").fetchone()[0])


def _v10_search(database: pw.Database) -> None:
    """A full-text index of the subject and text of every incoming mail, for `inboxd items --search`.

    Incoming only: our own mail is templates around what people wrote, and each item stores two or
    three of those for each mail in, so indexing them would triple the index's cost per mail.
    SQLite: an FTS5 table over `message` (external content: the text is not stored twice), kept
    up to date by triggers and filled from the mail already stored; none where SQLite lacks FTS5.
    PostgreSQL: a partial GIN index on the expression `search.py` matches with `@@`.
    """
    if isinstance(database, pw.PostgresqlDatabase):
        database.execute_sql(f"CREATE INDEX IF NOT EXISTS {SEARCH_INDEX} ON message USING GIN "
                             f"(to_tsvector('simple', subject || ' ' || body)) WHERE direction = 'in'")
        return
    if not fts5_available(database):
        log.warning("database: this SQLite has no FTS5: `inboxd items --search` will read every mail (LIKE)")
        return
    add = f"INSERT INTO {SEARCH_INDEX}(rowid, subject, body) SELECT new.id, new.subject, new.body"
    remove = (f"INSERT INTO {SEARCH_INDEX}({SEARCH_INDEX}, rowid, subject, body) "
              f"SELECT 'delete', old.id, old.subject, old.body")
    for statement in (
            f"CREATE VIRTUAL TABLE {SEARCH_INDEX} USING fts5(subject, body, content='message', content_rowid='id')",
            f"CREATE TRIGGER {SEARCH_INDEX}_insert AFTER INSERT ON message WHEN new.direction = 'in' "
            f"BEGIN {add}; END",
            f"CREATE TRIGGER {SEARCH_INDEX}_delete AFTER DELETE ON message WHEN old.direction = 'in' "
            f"BEGIN {remove}; END",
            f"CREATE TRIGGER {SEARCH_INDEX}_update AFTER UPDATE OF direction, subject, body ON message "
            f"BEGIN {remove} WHERE old.direction = 'in'; {add} WHERE new.direction = 'in'; END",
            f"INSERT INTO {SEARCH_INDEX}(rowid, subject, body) SELECT id, subject, body FROM message "
            f"WHERE direction = 'in'"):  # the mail stored before
        database.execute_sql(statement)


def _v11_language(database: pw.Database) -> None:
    """The language each item's requester is answered in; items from before it keep the team's default ("")."""
    _add_missing(database, Item, ("language",))


TEAM_TABLES: tuple[type[BaseModel], ...] = (Item, Message, Outbox, Event, Notice)  # each row of these is one team's


def _v12_teams(database: pw.Database) -> None:
    """Each item, mail, outgoing mail, event and notice belongs to a team (its key; "" until adopted).

    The same mail to two teams is a request to each: the inbound record is unique per team, and so is
    a week's digest. The item indexes of the sweep and the figures lead with the team. Rows from before
    are adopted by the first start with a config (`adopt_rows`).
    """
    for model in TEAM_TABLES:
        table = model._meta.table_name
        if "team" not in {c.name for c in database.get_columns(table)}:
            database.execute_sql(f"ALTER TABLE {table} ADD COLUMN team VARCHAR(255) NOT NULL DEFAULT ''")
    for old, columns in (("status_due_at", "status, due_at"), ("status_last_told_at", "status, last_told_at"),
                         ("created_at", "created_at"), ("resolved_at", "resolved_at")):  # the team first
        database.execute_sql(f"DROP INDEX IF EXISTS item_{old}")
        database.execute_sql(f"CREATE INDEX IF NOT EXISTS item_team_{old} ON item (team, {columns})")
    for statement in ("DROP INDEX IF EXISTS message_direction_message_id_fingerprint",
                      "CREATE UNIQUE INDEX IF NOT EXISTS message_team_direction_message_id_fingerprint "
                      "ON message (team, direction, message_id, fingerprint)",
                      "DROP INDEX IF EXISTS notice_digest_once",
                      "CREATE UNIQUE INDEX IF NOT EXISTS notice_team_digest_once "
                      "ON notice (team, kind, audience, for_date) WHERE item_id IS NULL"):
        database.execute_sql(statement)


def adopt_rows(teams: Sequence[tuple[str, str]]) -> tuple[str, dict[str, int]] | None:
    """Rows from before teams (team "") go to one team: (key, rows per table), or None when there are none.

    `teams` are (key, mailbox label), the first the default: the team whose mailbox the old incoming mail
    was mostly read from takes them. One UPDATE per table; the caller holds the transaction.
    """
    if not (Item.select().where(Item.team == "").exists() or Message.select().where(Message.team == "").exists()):
        return None  # the indexes answer: no scan of the events and the outbox at each start
    mostly = (Message.select(Message.mailbox).where((Message.team == "") & (Message.direction == "in"))
              .group_by(Message.mailbox).order_by(pw.fn.COUNT(Message.id).desc(), Message.mailbox).limit(1).scalar())
    key = next((key for key, label in teams if label == mostly), teams[0][0])
    counts = {model._meta.table_name: model.update(team=key).where(model.team == "").execute() for model in TEAM_TABLES}
    return key, counts


def _v13_leases(database: pw.Database) -> None:
    """Tables for several workers on one database: mailbox leases, the workers alive, the jobs run."""
    database.create_tables([Lease, Worker, JobRun])


def _v14_queue_order(database: pw.Database) -> None:
    """The round-robin's question per new item, one team's queue newest first, read from its own rows: by `queue`
    alone a quiet team in a busy deployment read the other teams' newer items of a queue of the same name first."""
    database.execute_sql("CREATE INDEX IF NOT EXISTS item_team_queue_id ON item (team, queue, id)")


# Append only: each entry runs once, in order, inside a transaction.
MIGRATIONS: list[tuple[int, Callable[[pw.Database], None]]] = [
    (1, _v1_initial), (2, _v2_conversations), (3, _v3_flood_cap), (4, _v4_promises), (5, _v5_member_secrets),
    (6, _v6_participants), (7, _v7_held_announcements), (8, _v8_first_contact), (9, _v9_figures),
    (10, _v10_search), (11, _v11_language), (12, _v12_teams), (13, _v13_leases),
    (14, _v14_queue_order)]


LATEST_SCHEMA = MIGRATIONS[-1][0]
MIGRATION_LOCK = 0x1B0D_0019  # the advisory lock a PostgreSQL migration holds until it commits


def open_database(url: str, migrate: bool = True) -> pw.Database:
    """Connect to the database, bind the models to it and bring the schema up to date.

    With migrate=False (the read-only commands) nothing is created or changed: a missing SQLite
    file or a schema older than this inboxd is an error saying what to do.
    """
    if not migrate:
        return _bind(open_read_only(url))
    database = connect_database(url)
    upgrade(database, url)
    return database


def schema_version_of(url: str) -> int:
    """The schema version of the database at `url` (0: none yet, or no file), changing nothing."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return 0
    database = _database(url, wal=False)
    database.connect()
    try:
        return schema_version(database)
    finally:
        database.close()


def open_read_only(url: str) -> pw.Database:
    """A connection to the database that is checked but not bound to the models, nor changed in any way.

    Refuses a SQLite file that does not exist (never creating one) and a schema this inboxd cannot
    read; for `inboxd health`, which may run beside a daemon in one process, and the read-only commands.
    """
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise InboxdError(f"database {shown_url(url)}: no such file (a mistyped path? `inboxd run`, `once` "
                          f"or `migrate` creates the database; read-only commands never do)")
    database = _database(url, wal=False)
    database.connect()
    try:
        version = schema_version(database)
        if version < LATEST_SCHEMA:
            raise InboxdError(f"database {shown_url(url)}: " + (
                "holds no inboxd data (no schema)" if version == 0 else
                f"its schema is version {version}, this inboxd needs {LATEST_SCHEMA}: "
                f"run `inboxd migrate` (it backs a SQLite database up first)"))
        _refuse_newer(version, url)
    except Exception:
        database.close()
        raise
    return database


def connect_database(url: str, options: str = "") -> pw.Database:
    """Connect to the database and bind the models to it; the schema is left as it is. `options`: PostgreSQL
    settings for every session of this process (`-c name=value ...`)."""
    path = sqlite_path(url)
    if path is not None and not path.parent.is_dir():  # SQLite would only say "unable to open database file"
        raise InboxdError(f"database {shown_url(url)}: the folder {path.parent} does not exist (create it, owned by "
                          f"the user inboxd runs as, or fix [database] url)")
    return _bind(_database(url, wal=True, options=options))


def _database(url: str, wal: bool, options: str = "") -> pw.Database:
    """The database at `url`, not connected; wal=False leaves a SQLite file's journal mode alone."""
    if url.startswith("sqlite:///"):
        return pw.SqliteDatabase(
            # IMMEDIATE: a transaction that reads then writes must not lose its snapshot to the
            # outbox thread's commits (SQLITE_BUSY without waiting); take the write lock up front.
            url.removeprefix("sqlite:///"), timeout=BUSY_TIMEOUT_SECONDS, lock_type="IMMEDIATE",
            pragmas={"synchronous": "normal", "foreign_keys": 1, "busy_timeout": int(BUSY_TIMEOUT_SECONDS * 1000)}
            | ({"journal_mode": "wal"} if wal else {}))
    return connect(url.replace("postgres://", "postgresql://", 1), **({"options": options} if options else {}))


def _bind(database: pw.Database) -> pw.Database:
    db.initialize(database)
    _write_turn.use(Path(database.database) if isinstance(database, pw.SqliteDatabase)
                    and database.database not in ("", ":memory:") else None)
    _COMPOSED.clear()
    database.connect(reuse_if_open=True)
    return database


def schema_version(database: pw.Database) -> int:
    """The last migration applied to this database; 0 for a database inboxd has not set up."""
    if not database.table_exists(SchemaVersion._meta.table_name):
        return 0
    return database.execute_sql("SELECT MAX(version) FROM schemaversion").fetchone()[0] or 0


def _refuse_newer(version: int, url: str) -> None:
    if version > LATEST_SCHEMA:
        raise InboxdError(f"database {shown_url(url)}: its schema is version {version}, made by a newer inboxd "
                          f"than this one (which knows up to {LATEST_SCHEMA}): upgrade inboxd, or restore a backup")


def upgrade(database: pw.Database, url: str) -> tuple[int, Path | None]:
    """Apply the migrations this database has not seen, after a backup of a SQLite database that has data.

    Returns the schema version it had and where the backup is (None: nothing to migrate, a new
    database, or PostgreSQL, whose backups are pg_dump's to make).
    """
    before = schema_version(database)
    _refuse_newer(before, url)
    saved, path = None, sqlite_path(url)
    if 0 < before < LATEST_SCHEMA and path is not None:
        saved = backup.before_upgrade(path, before)
        log.info("database: schema %d, this inboxd needs %d: backed up to %s first", before, LATEST_SCHEMA, saved)
    apply_migrations(database)
    return before, saved


def apply_migrations(database: pw.Database) -> None:
    """Apply the migrations this database has not seen yet."""
    with database.atomic():
        if isinstance(database, pw.PostgresqlDatabase):  # workers started at once: one migrates, the others wait
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        database.create_tables([SchemaVersion])
        done = {row.version for row in SchemaVersion.select()}
        for version, step in MIGRATIONS:
            if version not in done:
                log.info("database: applying schema migration %d", version)
                step(database)
                SchemaVersion.create(version=version, applied_at=datetime.now(UTC))
