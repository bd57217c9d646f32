"""The tracker: the only code that creates and changes items (the outbox only records delivery)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import peewee as pw

from .config import Config
from .mailout import Reply, compose, mail_context, ref_of, replies_for
from .message import InboundMessage
from .models import OPEN_STATUSES, Event, Item, Message, create
from .outbox import enqueue
from .render import Renderer
from .routing import Decision, Queue

log = logging.getLogger(__name__)


def _round_robin(queue: str, members: tuple[str, ...]) -> str:
    """The member after the one who got this queue's last assigned item."""
    last = (Item.select(Item.owner).where((Item.queue == queue) & Item.owner.in_(members))
            .order_by(Item.id.desc()).first())
    if last is None or last.owner not in members:
        return members[0]
    return members[(members.index(last.owner) + 1) % len(members)]


def _least_loaded(queue: str, members: tuple[str, ...]) -> str:
    """The member with the fewest open items; ties go to the first listed."""
    counts = dict(Item.select(Item.owner, pw.fn.COUNT(Item.id))
                  .where(Item.owner.in_(members) & Item.status.in_(OPEN_STATUSES))
                  .group_by(Item.owner).tuples())
    return min(members, key=lambda m: (counts.get(m, 0), members.index(m)))


STRATEGIES: dict[str, Callable[[str, tuple[str, ...]], str]] = {
    "round-robin": _round_robin,
    "least-loaded": _least_loaded,
}


def draft_item(config: Config, msg: InboundMessage, decision: Decision, owner: str | None,
               now: datetime) -> dict:
    """The fields of a new item for this mail, decided purely (the dry run shows them unsaved)."""
    disposition = decision.disposition
    assert isinstance(disposition, Queue)
    return {"subject": msg.subject or "(no subject)", "requester": msg.sender,
            "requester_name": msg.sender_name, "owner": owner, "queue": disposition.queue,
            "status": "open" if owner else "new", "priority": disposition.priority,
            "tags": list(disposition.tags), "rule": decision.rule, "created_at": now,
            "due_at": config.calendar.add(now, disposition.due_in or config.service.default_due)}


def choose_owner(disposition: Queue, config: Config) -> str | None:
    """Who gets a new item in this queue, by the rule's `assign`."""
    if not disposition.assign:
        return None
    strategy = STRATEGIES.get(disposition.assign)
    if strategy is None:
        return disposition.assign
    members = config.queues.get(disposition.queue) or tuple(m.email for m in config.team.members)
    return strategy(disposition.queue, members) if members else None


@dataclass(frozen=True)
class Tracker:
    """Opens items from decided mail, with their events and outgoing mail, in the caller's transaction."""

    config: Config
    renderer: Renderer

    def record_inbound(self, msg: InboundMessage, uid: int | None, now: datetime, outcome: str,
                       reason: str, item: Item | None = None) -> Message:
        """Store an incoming mail with what became of it."""
        return create(
            Message, message_id=msg.message_id, fingerprint=msg.fingerprint, direction="in",
            item=item, mailbox=self.config.mailbox.label, uid=uid, sender=msg.sender,
            subject=msg.subject, raw_size=msg.raw_size, summary=msg.summary, outcome=outcome,
            reason=reason, created_at=now)

    def open_item(self, msg: InboundMessage, uid: int | None, decision: Decision,
                  now: datetime, raw: bytes) -> Item:
        """Create the item, assign it, and enqueue the acknowledgement and the owner's mail."""
        disposition = decision.disposition
        assert isinstance(disposition, Queue)
        owner = choose_owner(disposition, self.config)
        item = create(Item, **draft_item(self.config, msg, decision, owner, now))
        record = self.record_inbound(msg, uid, now, "item", str(disposition), item)
        ref = ref_of(item, self.config.team)
        how = f"rule {decision.rule}" if decision.rule else "no rule matched: default queue"
        self.event(item, record, now, msg.sender or "unknown sender", "created",
                   f"from {msg.sender or 'unknown sender'} by {how}: {disposition}", decision.trace_json())
        if owner:
            self.event(item, record, now, "inboxd", "assigned", f"assigned to {owner} ({disposition.assign})")
        if disposition.ack_template() and not msg.sender:
            self.event(item, record, now, "inboxd", "not-acknowledged", "the mail has no sender address")
        self.send(replies_for(disposition, msg.sender, owner), mail_context(self.config.team, item, msg),
                  item, now, msg, raw)
        log.info("%s: created from %s (%s), queue %s, owner %s, due %s", ref,
                 msg.sender or "unknown sender", how, item.queue, owner or "none",
                 item.due_at.astimezone(self.config.calendar.tz).isoformat(timespec="minutes"))
        return item

    def send(self, replies: list[Reply], context: dict, item: Item | None, now: datetime,
             msg: InboundMessage, raw: bytes) -> None:
        """Render each reply's template and put the mails in the outbox."""
        ref = ref_of(item, self.config.team) if item else None
        for reply in replies:
            mail = compose(reply.template, self.renderer.render(reply.template, context), self.config.team,
                           reply.to, now, ref=ref, reply_to=msg if reply.threaded else None,
                           attach_original=raw if reply.attach_original else None)
            enqueue(mail, item, now, reply.acknowledges)

    @staticmethod
    def event(item: Item | None, record: Message | None, now: datetime, actor: str, kind: str,
              detail: str, trace: list | None = None) -> Event:
        """Write one line of the audit trail."""
        return create(Event, item=item, message=record, at=now, actor=actor, kind=kind,
                            detail=detail, trace=trace)
