"""The read side: questions the pipeline and the jobs ask of the database, answered as domain values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import peewee as pw

from .caps import SenderSigns, subject_core
from .domain import ItemView
from .models import (
    Event,
    Item,
    Message,
    Outbox,
    automatic_mails_since,
    last_owner,
    open_counts,
    requests_since,
    same_text_requests,
    team,
)
from .settings import TeamConfig


def view(row: Item) -> ItemView:
    """A stored item as a value the deciders can read."""
    return ItemView(
        id=row.id, subject=row.subject, requester=row.requester, requester_name=row.requester_name or "",
        owner=row.owner, queue=row.queue, status=row.status, priority=row.priority, tags=tuple(row.tags or ()),
        rule=row.rule, created_at=row.created_at, due_at=row.due_at, acknowledged_at=row.acknowledged_at,
        first_response_at=row.first_response_at, resolved_at=row.resolved_at, satisfaction=row.satisfaction,
        secret=row.secret or "", waiting_on=row.waiting_on, on_track=bool(row.on_track), follows_id=row.follows_id,
        last_told_at=row.last_told_at, paused_at=row.paused_at, requested_due_at=row.requested_due_at,
        participants=tuple(row.participants or ()), language=row.language or "")


def item(number: int) -> ItemView | None:
    """The item with this number, if this thread's team has one: another team's item is none of its business."""
    row = Item.get_or_none((Item.id == number) & (Item.team == team()))
    return view(row) if row is not None else None


class StoredThreads:
    """`threads.ThreadLookup` answered from the database."""

    def item(self, number: int) -> ItemView | None:
        return item(number)

    def item_of_mail(self, message_ids: Sequence[str], outgoing_only: bool = False) -> ItemView | None:
        condition = Message.message_id.in_(list(message_ids)) & Message.item.is_null(False) & (Message.team == team())
        if outgoing_only:
            condition &= Message.direction == "out"
        known = Message.select(Message.item).where(condition).order_by(Message.id.desc()).first()
        return item(known.item_id) if known is not None else None

    def kind_of_mail(self, message_id: str) -> str | None:
        ours = (Message.select(Message.outcome)
                .where((Message.message_id == message_id) & (Message.direction == "out") & (Message.team == team()))
                .first())
        return ours.outcome if ours is not None else None


@dataclass(frozen=True)
class OpeningMail:
    """The mail that opened an item, as stored: requester mail threads on it, templates quote it."""

    message_id: str
    body: str


def opening_mail(item_id: int) -> OpeningMail | None:
    """The first incoming mail of an item."""
    first = (Message.select(Message.message_id, Message.body)
             .where((Message.item == item_id) & (Message.direction == "in")).order_by(Message.id).first())
    return OpeningMail(first.message_id, first.body) if first is not None else None


def stored_request(item: ItemView, opening: OpeningMail | None) -> dict[str, Any]:
    """The template view of the mail that opened the item, from what was stored of it."""
    text = opening.body if opening else ""
    return {"subject": item.subject, "sender": item.requester,
            "sender_name": item.requester_name or item.requester.split("@")[0],
            "summary": " ".join(text.split())[:200], "text": text, "attachments": []}


def history(item_id: int) -> list[dict[str, Any]]:
    """The item's audit trail, for mail that needs it (a low rating to the lead)."""
    events = Event.select().where(Event.item == item_id).order_by(Event.at, Event.id)
    return [{"at": e.at, "actor": e.actor, "kind": e.kind, "detail": e.detail} for e in events]


class StoredAssignments:
    """`intake.AssignmentHistory` answered from the database."""

    def last_owner(self, queue: str, members: tuple[str, ...]) -> str | None:
        return last_owner(queue, members)

    def open_counts(self, members: tuple[str, ...]) -> dict[str, int]:
        return open_counts(members)


def not_paused() -> pw.Expression:
    """`promises.paused` negated, as SQL: items whose date's clock is running (the jobs' and the digest's)."""
    return ~((Item.status == "waiting") & (Item.waiting_on.is_null() | (Item.waiting_on == "requester")))


@dataclass(frozen=True)
class ItemRecord:
    """One item with its whole history and every mail in and out, for `inboxd item`."""

    item: ItemView
    events: list[dict[str, Any]]
    mail: list[dict[str, Any]]  # at, direction, from, to, subject, message_id, status, kind, text


def item_record(number: int, team_address: str) -> ItemRecord | None:
    """Everything stored about one item, or None when there is no such item."""
    found = item(number)
    if found is None:
        return None
    events = [{"at": e.at, "actor": e.actor, "kind": e.kind, "detail": e.detail}
              for e in Event.select().where(Event.item == number).order_by(Event.at, Event.id)]
    delivery = {o.message_id: o for o in Outbox.select().where(Outbox.item == number)}
    mail = []
    for m in Message.select().where(Message.item == number).order_by(Message.created_at, Message.id):
        sent = delivery.get(m.message_id)
        status = (sent.status + (f" ({sent.last_error})" if sent.last_error else "")) if sent else \
            "received" if m.direction == "in" else "-"
        mail.append({"at": (sent.sent_at or sent.created_at) if sent else m.created_at, "direction": m.direction,
                     "from": m.sender, "to": list(sent.recipients) if sent else [team_address],
                     "subject": m.subject, "message_id": m.message_id, "status": status,
                     "kind": m.outcome, "text": m.body})
    return ItemRecord(found, events, mail)


def sender_signs(sender: str, text: str, subject: str, since: datetime, team: TeamConfig) -> SenderSigns:
    """What `caps` needs to know of a sender's last window: what we sent them, what they sent, the same again?

    The same again: the whole text (empty: not compared) and the subject without prefixes and tags.
    """
    requests = requests_since(sender, since)
    same = None
    if text and sender and requests:
        core = subject_core(subject)
        same = next((item_id for item_id, earlier in same_text_requests(sender, text, since)
                     if subject_core(earlier) == core), None)
    return SenderSigns(automatic_mails_since(sender, since) if sender else 0, requests,
                       team.ref(same) if same is not None else None)
