"""The tracker: the only code that writes items, their history, absences and job notices.

Deciders (intake, conversation, the sweep) return complete plans; the tracker writes them as they
are, inside the caller's transaction. The outbox reports deliveries through it too, so "where does
an item change?" has one answer: here.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from datetime import datetime
from enum import Enum
from typing import Any, overload

import peewee as pw

from .clock import BusinessCalendar, Duration
from .domain import ACK_WITHIN, OPEN_STATUSES, ItemView, Plan
from .intake import NewItem
from .message import InboundMessage
from .models import Absence, DateMove, Event, Item, Message, Notice, Silence, composed, create, db, new_secret, team
from .promises import SILENCE_GRACE, date_in_force

log = logging.getLogger(__name__)
BODY_KEPT = 64 * 1024  # characters of a mail's text kept for `inboxd item`; the whole mail stays on the server
HELD, HELD_ANNOUNCED = "held", "held_announced"  # a new item's announcement waits for a batch; then it went
_COLUMNS = {f.name for f in fields(ItemView)} - {"id", "follows_id", "secret"}


class Silences:
    """Notes when a requester hears from us, and writes down the silence before it if it ran over `update_every`.

    Heard: a mail to them left the outbox, or a member answered them directly with the team copied.
    """

    def __init__(self, calendar: BusinessCalendar, every: Duration) -> None:
        self.calendar, self.every = calendar, every

    def heard(self, item_id: int, recipient: str, at: datetime) -> None:
        """The item's requester (if `recipient` is them) heard from us at `at`; per mail, the SQL composed once."""
        sql = composed("heard", lambda: Item.select(Item.requester, Item.heard_at, Item.created_at).where(Item.id == 0))
        row = db.execute_sql(sql, [item_id]).fetchone()
        if row is None or row[0] != recipient:
            return
        previous = Item.heard_at.python_value(row[1] or row[2])
        if previous is None or at < previous:
            return
        try:
            overdue = self.calendar.add(previous, self.every)
            minutes = self.calendar.working_minutes(previous, at) if at > overdue + SILENCE_GRACE else None
        except Exception:  # a figure must never stop a delivery from being recorded
            log.exception("item %d: the silence before this mail could not be measured; not counted", item_id)
            minutes = None
        if minutes is not None:
            create(Silence, item=item_id, heard_at=previous, overdue_at=overdue, ended_at=at, minutes=minutes)
        sql = composed("heard_at", lambda: Item.update(heard_at=at).where(Item.id == 0))
        db.execute_sql(sql, [Item.heard_at.db_value(at), item_id])


def _stored(value: Any) -> Any:
    """A domain value as the database keeps it: enums as their text, tags as a list."""
    if isinstance(value, Enum):
        return value.value
    return list(value) if isinstance(value, tuple) else value


class Tracker:
    """Writes what was decided about mail and items, in the caller's transaction."""

    def __init__(self, mailbox: str, silences: Silences | None = None) -> None:
        self.mailbox = mailbox  # the label incoming mail is recorded under
        self.silences = silences  # a member's direct answer to the requester ends a silence

    def record_inbound(self, msg: InboundMessage, uid: int | None, now: datetime, outcome: str, reason: str,
                       item_id: int | None = None, body: str = "") -> Message:
        """Store an incoming mail with what became of it."""
        return create(
            Message, message_id=msg.message_id, fingerprint=msg.fingerprint, direction="in",
            item=item_id, mailbox=self.mailbox, uid=uid, sender=msg.sender,
            subject=msg.subject, raw_size=msg.raw_size, summary=msg.summary, outcome=outcome,
            body=body if len(body) <= BODY_KEPT else body[:BODY_KEPT] + "\n[… cut; the whole mail is on the server]",
            reason=reason, created_at=now)

    def record_parked(self, message_id: str, fingerprint: str, uid: int | None, sender: str, subject: str,
                      raw_size: int, reason: str, now: datetime) -> None:
        """Note a mail that cannot be handled; it stays on the server for a person."""
        Message.insert(team=team(), message_id=message_id, fingerprint=fingerprint, direction="in",
                       mailbox=self.mailbox, uid=uid, sender=sender, subject=subject, raw_size=raw_size,
                       outcome="parked", reason=reason, created_at=now).on_conflict_ignore().execute()

    @staticmethod
    def forget_parked(record_id: int) -> None:
        """Drop the note of a parked mail that is being tried again."""
        Message.delete_by_id(record_id)

    def open_item(self, new: NewItem, msg: InboundMessage, uid: int | None, now: datetime,
                  follows: int | None = None) -> tuple[ItemView, Message]:
        """Create the item with its inbound record and first history lines; returns it saved."""
        columns = {name: _stored(getattr(new.item, name)) for name in _COLUMNS}
        row = create(Item, **columns, secret=new_secret(), follows=follows)
        item = new.item.changed({"id": row.id, "secret": row.secret, "follows_id": follows})
        record = self.record_inbound(msg, uid, now, "item", new.disposition, item.id, body=msg.text)
        self.event(item.id, record, now, msg.sender or "unknown sender", "created", new.created, list(new.trace))
        for actor, kind, detail in new.events:
            self.event(item.id, record, now, actor, kind, detail)
        return item, record

    @overload
    def apply(self, item: ItemView, plan: Plan, record: Message, now: datetime) -> ItemView: ...

    @overload
    def apply(self, item: None, plan: Plan, record: Message, now: datetime) -> None: ...

    def apply(self, item: ItemView | None, plan: Plan, record: Message, now: datetime) -> ItemView | None:
        """Write a conversation's plan as it is: field changes, absences, history lines; the item as it now is.

        A member's `#away`/`#back` in a new mail is about no item: only the absence and its lines are written.
        """
        self.set_away_all(plan.away, now)
        if item is not None and item.id is not None and "heard_at" in plan.changes and self.silences is not None \
                and item.status in OPEN_STATUSES:  # reopened: the silence counts afresh from now
            self.silences.heard(item.id, item.requester, now)  # a member answered them, the team copied
        if plan.changes and item is not None:
            Item.update(**{name: _stored(value) for name, value in plan.changes.items()}) \
                .where(Item.id == item.id).execute()
            self._date_moved(item, plan, now)
        for actor, kind, detail in plan.events:
            self.event(item.id if item is not None else None, record, now, actor, kind, detail)
        return item.changed(plan.changes) if item is not None else None

    def _date_moved(self, item: ItemView, plan: Plan, now: datetime) -> None:
        """A member's later #eta is a date move; from the date as it stood (a pause moved it on, not passed it)."""
        moved_to, old = plan.changes.get("due_at"), item.due_at
        if not moved_to or old is None or not any(mail.template == "deadline_changed" for mail in plan.mails):
            return
        if self.silences is not None:  # the calendar comes with the silences: the sweep, without, moves no date
            old = date_in_force(old, item.paused_at, now, self.silences.calendar)
        if moved_to > old:
            create(DateMove, item=item.id, at=now, old_due=old, new_due=moved_to)

    def set_away_all(self, away: tuple[tuple[str, datetime | None], ...], now: datetime) -> None:
        """Record `#away until DATE` (or `#back`, with None) for each member named."""
        for member, until in away:
            Absence.delete().where(Absence.member == member).execute()
            if until is not None:
                Absence.create(member=member, until=until, since=now)

    @staticmethod
    def fill_first_response_minutes(calendar: BusinessCalendar) -> int:
        """Business minutes to the first response for items answered before inboxd kept them; how many."""
        filled = 0
        while True:
            rows = list(Item.select(Item.id, Item.created_at, Item.first_response_at).where(
                Item.first_response_at.is_null(False) & Item.first_response_minutes.is_null()).limit(500))
            for row in rows:
                minutes = calendar.working_minutes(row.created_at, row.first_response_at)
                Item.update(first_response_minutes=minutes).where(Item.id == row.id).execute()
            filled += len(rows)
            if len(rows) < 500:
                return filled

    @staticmethod
    def event(item_id: int | None, record: Message | None, now: datetime, actor: str, kind: str,
              detail: str, trace: list[dict[str, Any]] | None = None) -> Event:
        """Write one line of the audit trail."""
        return create(Event, item=item_id, message=record, at=now, actor=actor, kind=kind, detail=detail,
                      trace=trace)

    @staticmethod
    def claim_notice(kind: str, item_id: int | None, for_date: datetime, audience: str, now: datetime) -> bool:
        """Record that a job's mail goes out; False when it went out already (another sweep, another process)."""
        try:
            with db.atomic():
                create(Notice, item=item_id, kind=kind, for_date=for_date, audience=audience, created_at=now)
        except pw.IntegrityError:
            return False
        return True

    @staticmethod
    def hold_announcement(item_id: int, queue: str, now: datetime) -> None:
        """The team hears of this item in the next batch (`sweep`'s held_requests), not at once."""
        create(Notice, item=item_id, kind=HELD, for_date=now, audience=queue, created_at=now)

    def announced(self, item_ids: tuple[int, ...], to: tuple[str, ...], now: datetime) -> None:
        """A batch told the team of these held items; each one's history says so."""
        Notice.update(kind=HELD_ANNOUNCED).where(Notice.item.in_(list(item_ids)) & (Notice.kind == HELD)).execute()
        for item_id in item_ids:
            self.event(item_id, None, now, "inboxd", "announced", f"announced in a batch to {', '.join(to)}")

    def job_sent(self, item_id: int, kind: str, to: tuple[str, ...], why: str, to_requester: bool,
                 now: datetime) -> None:
        """A job's mail about an item is in the outbox: the history says so, and the requester was told."""
        if to_requester:
            Item.update(last_told_at=now).where(Item.id == item_id).execute()
        self.event(item_id, None, now, "inboxd", kind, f"{kind.replace('_', ' ')} to {', '.join(to)}: {why}")

    @staticmethod
    def delivered(item_id: int | None, acknowledges: bool, refused: str, kind: str, now: datetime) -> None:
        """The outbox sent a mail: an acknowledgement marks the item; recipients the server refused are noted."""
        if acknowledges and item_id:  # per acknowledgement sent: the SQL composed once
            sql = composed("acknowledged", lambda: Item.update(
                acknowledged_at=now, acknowledged_quickly=Item.created_at >= now).where(
                (Item.id == 0) & Item.acknowledged_at.is_null()))
            when = Item.acknowledged_at.db_value
            db.execute_sql(sql, [when(now), when(now - ACK_WITHIN), item_id])
        if refused and item_id:
            create(Event, item=item_id, at=now, actor="inboxd", kind="delivery-failed",
                   detail=f"{kind} not delivered to {refused}")

    @staticmethod
    def given_up(item_id: int | None, detail: str, now: datetime) -> None:
        """The outbox gave a mail up: the item's history says why."""
        if item_id:
            create(Event, item=item_id, at=now, actor="inboxd", kind="delivery-failed", detail=detail)
