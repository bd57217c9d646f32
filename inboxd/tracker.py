"""The tracker: the only code that creates and changes items (the outbox only records delivery)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Collection

import peewee as pw

from .absence import away, set_away
from .config import Config
from .conversation import Plan
from .mailout import Reply, attachment_parts, compose, mail_context, ref_of, replies_for
from .message import InboundMessage
from .models import OPEN_STATUSES, Event, Item, Message, automatic_mails_since, create, new_secret
from .outbox import enqueue
from .promises import clock_changes, promised_date
from .render import Renderer
from .requested import requested_date
from .routing import Decision, Disposition, Queue
from .threads import secret_address, without_tags

log = logging.getLogger(__name__)
BODY_KEPT = 64 * 1024  # characters of a mail's text kept for `inboxd item`; the whole mail stays on the server


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
    requested = requested_date(f"{msg.subject}\n{msg.text}", now, config.calendar) \
        if disposition.honour_requested_date else None
    return {"subject": without_tags(msg.subject, config.team.ref_prefix) or "(no subject)", "requester": msg.sender,
            "requester_name": msg.sender_name, "owner": owner, "queue": disposition.queue,
            "status": "open" if owner else "new", "priority": disposition.priority,
            "tags": list(disposition.tags), "rule": decision.rule, "created_at": now, "last_told_at": now,
            "due_at": promised_date(config.calendar, config.service, now, disposition.due_in, requested),
            "requested_due_at": requested}


def choose_owner(disposition: Queue, config: Config, away: Collection[str] = ()) -> str | None:
    """Who gets a new item in this queue, by the rule's `assign`; members who are away are skipped."""
    if not disposition.assign:
        return None
    strategy = STRATEGIES.get(disposition.assign)
    if strategy is None:
        return disposition.assign if disposition.assign not in away else None
    members = config.queues.get(disposition.queue) or tuple(m.email for m in config.team.members)
    members = tuple(m for m in members if m not in away)
    return strategy(disposition.queue, members) if members else None


@dataclass(frozen=True)
class Tracker:
    """Opens items from decided mail, with their events and outgoing mail, in the caller's transaction."""

    config: Config
    renderer: Renderer

    def record_inbound(self, msg: InboundMessage, uid: int | None, now: datetime, outcome: str,
                       reason: str, item: Item | None = None, body: str = "") -> Message:
        """Store an incoming mail with what became of it."""
        return create(
            Message, message_id=msg.message_id, fingerprint=msg.fingerprint, direction="in",
            item=item, mailbox=self.config.mailbox.label, uid=uid, sender=msg.sender,
            subject=msg.subject, raw_size=msg.raw_size, summary=msg.summary, outcome=outcome,
            body=body if len(body) <= BODY_KEPT else body[:BODY_KEPT] + "\n[… cut; the whole mail is on the server]",
            reason=reason, created_at=now)

    def open_item(self, msg: InboundMessage, uid: int | None, decision: Decision,
                  now: datetime, raw: bytes, follows: Item | None = None) -> Item:
        """Create the item, assign it, and enqueue the acknowledgement and the owner's mail."""
        disposition = decision.disposition
        assert isinstance(disposition, Queue)
        gone = away(self.config.team, now) if disposition.assign else {}
        owner = choose_owner(disposition, self.config, gone)
        item = create(Item, **draft_item(self.config, msg, decision, owner, now), secret=new_secret(),
                      follows=follows)
        record = self.record_inbound(msg, uid, now, "item", str(disposition), item, body=msg.text)
        ref = ref_of(item, self.config.team)
        how = f"rule {decision.rule}" if decision.rule else "no rule matched: default queue"
        self.event(item, record, now, msg.sender or "unknown sender", "created",
                   f"from {msg.sender or 'unknown sender'} by {how}: {disposition}", decision.trace_json())
        if msg.cut_from:
            self.event(item, record, now, "inboxd", "oversized",
                       f"a mail of {msg.cut_from / 1024 / 1024:.1f} MB: only its headers and the start of its text "
                       f"were read; the files stay on the server ([limits] max_message_size)")
        if follows is not None:
            self.event(item, record, now, "inboxd", "follows",
                       f"follows {ref_of(follows, self.config.team)}, closed too long ago to reopen")
        if owner:
            self.event(item, record, now, "inboxd", "assigned", f"assigned to {owner} ({disposition.assign})")
        elif gone:
            self.event(item, record, now, "inboxd", "not-assigned",
                       f"{disposition.assign}: skipped {', '.join(sorted(gone))} (away); left for the queue")
        if item.requested_due_at is not None:
            promised = "promised" if item.due_at == item.requested_due_at else "cannot be promised"
            self.event(item, record, now, "inboxd", "requested-date",
                       f"the requester asked for {self._local(item.requested_due_at)}: {promised}")
        if disposition.ack_template() and not msg.sender:
            self.event(item, record, now, "inboxd", "not-acknowledged", "the mail has no sender address")
        members = () if owner or not self.config.service.announce_new else self.config.queues.get(item.queue, ())
        if not self.flooding(msg.sender, item, record, now):
            self.send(replies_for(disposition, msg.sender, owner, members), self.context(item, msg), item, now, msg,
                      raw)
        log.info("%s: created from %s (%s), queue %s, owner %s, due %s", ref,
                 msg.sender or "unknown sender", how, item.queue, owner or "none",
                 item.due_at.astimezone(self.config.calendar.tz).isoformat(timespec="minutes"))
        return item

    def converse(self, item: Item, plan: Plan, msg: InboundMessage, text: str, uid: int | None,
                 now: datetime, raw: bytes) -> Message:
        """Apply what a mail on an existing item means: field changes, audit lines, mails."""
        record = self.record_inbound(msg, uid, now, plan.kind, plan.summary, item, body=text)
        before = {"status": item.status, "waiting_on": item.waiting_on, "due_at": item.due_at,
                  "paused_at": item.paused_at}
        timing, line = clock_changes(before, plan.changes, now, self.config.calendar)
        plan.changes.update(timing)
        if line:
            plan.events.append(("inboxd", "clock", line))
        if any(item.requester and item.requester in mail.to for mail in plan.mails):
            plan.changes["last_told_at"] = now
        for member, back in plan.away:
            set_away(member, back, now)
        if plan.changes:
            Item.update(**plan.changes).where(Item.id == item.id).execute()
            for name, value in plan.changes.items():
                setattr(item, name, value)
        for actor, kind, detail in plan.events:
            self.event(item, record, now, actor, kind, detail)
        if plan.mails:
            self.send(plan.mails, self.context(item, msg, stored_request(item)) | plan.context, item, now, msg, raw)
        log.info("%s: %s from %s: %s", ref_of(item, self.config.team), plan.kind, msg.sender or "unknown sender",
                 plan.summary)
        return record

    def member_mail(self, plan: Plan, msg: InboundMessage, text: str, uid: int | None, now: datetime) -> Message:
        """Apply a member's `#away`/`#back` mail, which is about them and belongs to no item."""
        record = self.record_inbound(msg, uid, now, plan.kind, plan.summary, body=text)
        for member, back in plan.away:
            set_away(member, back, now)
        for actor, kind, detail in plan.events:
            self.event(None, record, now, actor, kind, detail)
        self.send(plan.mails, self.context(None, msg) | plan.context, None, now, msg)
        log.info("%s from %s: %s", plan.kind, msg.sender, plan.summary)
        return record

    def flooding(self, sender: str, item: Item | None, record: Message, now: datetime) -> bool:
        """Whether this sender already had its share of automatic mail; their mail then makes no mail at all.

        Two auto-responders facing each other stop here, and a flood still becomes items, silently.
        """
        limits = self.config.limits
        if not sender:
            return False
        since = now - (self.config.calendar.add(now, limits.automatic_window) - now)
        count = automatic_mails_since(sender, since)
        if count < limits.automatic_per_sender:
            return False
        why = (f"no automatic mail: {sender} already got {count} in the last {limits.automatic_window} "
               f"([limits] automatic_per_sender = {limits.automatic_per_sender})")
        self.event(item, record, now, "inboxd", "flood-cap", why)
        log.warning("%s: %s", ref_of(item, self.config.team) if item else record.message_id, why)
        return True

    def context(self, item: Item | None, msg: InboundMessage, request: dict[str, Any] | None = None,
                disposition: Disposition | None = None) -> dict[str, Any]:
        """The template context for mail about this item, answering this mail."""
        return mail_context(self.config.team, item, msg, disposition, request, self.config.service.survey)

    def send(self, replies: list[Reply], context: dict[str, Any], item: Item | None, now: datetime,
             msg: InboundMessage | None = None, raw: bytes = b"") -> None:
        """Render each reply's template and put the mails in the outbox (answering `msg`, if any)."""
        team = self.config.team
        ref = ref_of(item, team) if item else None
        files = attachment_parts(raw) if any(r.carry_attachments for r in replies) else ()
        for reply in replies:
            values = context | reply.extra
            if reply.with_history and item is not None:
                values["history"] = history(item)
            rendered = self.renderer.render(reply.template, values)
            secret = reply.internal and item is not None and self.config.commands.require_secret
            mail = compose(reply.template, rendered, team, reply.to, now, ref=ref,
                           thread=self._thread(reply, item, msg),
                           attach_original=raw if reply.attach_original else None,
                           reply_address=secret_address(team, item) if secret and item else None,
                           attachments=files if reply.carry_attachments else ())
            enqueue(mail, item, now, reply.acknowledges, rendered.text, reply.automatic)

    @staticmethod
    def _thread(reply: Reply, item: Item | None, msg: InboundMessage | None) -> tuple[str, ...]:
        """The Message-IDs a mail answers: the requester's thread, or the mail being answered."""
        if reply.to_requester and item is not None and (msg is None or msg.sender != item.requester):
            first = (Message.select(Message.message_id).where((Message.item == item) & (Message.direction == "in"))
                     .order_by(Message.id).first())
            return (first.message_id,) if first else ()
        return (*msg.references[-10:], msg.message_id) if reply.threaded and msg is not None else ()

    def _local(self, moment: datetime) -> str:
        return moment.astimezone(self.config.calendar.tz).strftime("%a %d %b %Y %H:%M")

    @staticmethod
    def event(item: Item | None, record: Message | None, now: datetime, actor: str, kind: str,
              detail: str, trace: list | None = None) -> Event:
        """Write one line of the audit trail."""
        return create(Event, item=item, message=record, at=now, actor=actor, kind=kind,
                            detail=detail, trace=trace)


def stored_request(item: Item) -> dict[str, Any]:
    """The template view of the mail that opened the item, from what was stored of it."""
    first = (Message.select().where((Message.item == item) & (Message.direction == "in"))
             .order_by(Message.id).first())
    text = first.body if first else ""
    return {"subject": item.subject, "sender": item.requester,
            "sender_name": item.requester_name or item.requester.split("@")[0],
            "summary": " ".join(text.split())[:200], "text": text, "attachments": []}


def history(item: Item) -> list[dict[str, Any]]:
    """The item's audit trail, for mail that needs it (a low rating to the lead)."""
    events = Event.select().where(Event.item == item).order_by(Event.at, Event.id)
    return [{"at": e.at, "actor": e.actor, "kind": e.kind, "detail": e.detail} for e in events]
