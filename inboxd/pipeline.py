"""The pipeline: the one place that sequences the steps for one incoming mail."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import peewee as pw

from . import conversation, guards
from .clock import Clock
from .config import Config
from .errors import InboxdError, MessageError
from .mailout import ref_of, replies_for
from .message import InboundMessage, decode, raw_key
from .models import Item, Message, seen_inbound, write_transaction
from .render import Renderer
from .routing import Decision, Decline, Ignore, Queue, Redirect, RuleSet
from .threads import find_thread, item_answered_automatically
from .tracker import Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What happened to one mail, for logs, the demo and the source."""

    # item | skipped | declined | redirected | ignored | duplicate | parked, or on an existing item:
    # command | refused | relayed | reply | rating | thanks | reopened | recorded
    kind: str
    message_id: str
    sender: str
    subject: str
    reason: str = ""
    ref: str | None = None

    @property
    def mark_done(self) -> bool:
        """Parked mail stays on the server untouched, for a person to look at."""
        return self.kind != "parked"


class Pipeline:
    """Decodes, guards, routes and records one mail, all in one transaction."""

    def __init__(self, config: Config, rules: RuleSet, renderer: Renderer, clock: Clock) -> None:
        self.config, self.rules, self.clock = config, rules, clock
        self.tracker = Tracker(config, renderer)

    def process(self, raw: bytes, uid: int | None = None, cut_from: int = 0) -> Outcome:
        """Handle one raw mail (or the start of a huge one); never raises for a bad mail, it is parked instead."""
        try:
            msg = decode(raw, cut_from)
        except MessageError as exc:
            return self._park(raw, uid, str(exc))
        try:
            with write_transaction():
                return self._process(msg, raw, uid)
        except pw.IntegrityError as exc:
            if seen_inbound(msg.message_id, msg.fingerprint):  # another worker recorded it first
                return Outcome("duplicate", msg.message_id, msg.sender, msg.subject, "recorded concurrently")
            return self._park(raw, uid, f"database refused it: {exc}", msg)
        except InboxdError as exc:
            return self._park(raw, uid, f"{type(exc).__name__}: {exc}", msg)
        except Exception as exc:
            log.exception("uid %s %s: unexpected error; the mail stays on the server", uid, msg.message_id)
            return self._park(raw, uid, f"unexpected {type(exc).__name__}: {exc}", msg)

    def _process(self, msg: InboundMessage, raw: bytes, uid: int | None) -> Outcome:
        now = self.clock.now()
        seen = seen_inbound(msg.message_id, msg.fingerprint)
        if seen is not None and seen[1] == "parked":
            Message.delete_by_id(seen[0])  # parked before (e.g. a broken template since fixed): try again
        elif seen is not None:
            return Outcome("duplicate", msg.message_id, msg.sender, msg.subject, f"already processed ({seen[1]})")
        skip = guards.check(msg, self.config.team.address)
        if skip is not None:
            return self._skip(msg, raw, uid, skip)
        follows = None
        thread = find_thread(msg, self.config.team)
        if thread is not None:
            text = conversation.reply_text(msg)
            plan = conversation.decide(self.config, thread.item, msg, text, thread.secret_ok, now)
            if plan.kind != "new-item":
                self.tracker.converse(thread.item, plan, msg, text, uid, now, raw)
                return Outcome(plan.kind, msg.message_id, msg.sender, msg.subject, plan.summary,
                               ref_of(thread.item, self.config.team))
            follows = thread.item  # a reply long after the item closed: a new item that links the old
        elif self.config.team.speaks_for_team(msg.sender):
            text = conversation.reply_text(msg)
            plan = conversation.member_mail(self.config, msg, text, now)
            if plan is not None:
                self.tracker.member_mail(plan, msg, text, uid, now)
                return Outcome(plan.kind, msg.message_id, msg.sender, msg.subject, plan.summary)
        decision = self.rules.decide(msg)
        return self._dispose(msg, raw, uid, decision, follows)

    def _skip(self, msg: InboundMessage, raw: bytes, uid: int | None, skip: guards.Skip) -> Outcome:
        """Store a mail that must not be answered; a bounce or auto-reply to our mail goes on its item."""
        now, team = self.clock.now(), self.config.team
        item = item_answered_automatically(msg, raw, team) if skip.guard != "own-mail" else None
        record = self.tracker.record_inbound(msg, uid, now, "skipped", str(skip), item,
                                             body=msg.text if item else "")  # kept only with its item
        ref = ref_of(item, team) if item else None
        if item is not None:
            bounced = guards.is_bounce(msg)
            kind, what = ("delivery-failed", "our mail bounced") if bounced else ("auto-reply", "auto-reply")
            self.tracker.event(item, record, now, msg.sender or "unknown sender", kind,
                               f"{what}: {msg.subject[:120]!r} ({skip})")
        log.info("uid %s %s from %s: skipped, %s%s", uid, msg.message_id, msg.sender, skip,
                 f"; noted on {ref}" if ref else "")
        return Outcome("skipped", msg.message_id, msg.sender, msg.subject, str(skip), ref)

    def _dispose(self, msg: InboundMessage, raw: bytes, uid: int | None, decision: Decision,
                 follows: Item | None = None) -> Outcome:
        now, disposition = self.clock.now(), decision.disposition
        base = (msg.message_id, msg.sender, msg.subject)
        if isinstance(disposition, Queue):
            item = self.tracker.open_item(msg, uid, decision, now, raw, follows)
            return Outcome("item", *base, str(disposition), ref_of(item, self.config.team))
        why = f"rule {decision.rule}: {disposition}"
        kind = {Decline: "declined", Redirect: "redirected", Ignore: "ignored"}[type(disposition)]
        record = self.tracker.record_inbound(msg, uid, now, kind, why)
        self.tracker.event(None, record, now, "inboxd", type(disposition).__name__.lower(), why,
                           decision.trace_json())
        if not self.tracker.flooding(msg.sender, None, record, now):
            context = self.tracker.context(None, msg, disposition=disposition)
            self.tracker.send(replies_for(disposition, msg.sender), context, None, now, msg, raw)
        log.info("%s from %s: %s", msg.message_id, msg.sender, why)
        return Outcome(kind, *base, why)

    def _park(self, raw: bytes, uid: int | None, reason: str, msg: InboundMessage | None = None) -> Outcome:
        """Record a mail that cannot be handled; it stays on the server for a person."""
        message_id = msg.message_id if msg else raw_key(raw)
        sender, subject = (msg.sender, msg.subject) if msg else ("", "")
        fingerprint = msg.fingerprint if msg else raw_key(raw)
        with write_transaction():
            Message.insert(message_id=message_id, fingerprint=fingerprint, direction="in",
                           mailbox=self.config.mailbox.label,
                           uid=uid, sender=sender, subject=subject, raw_size=len(raw),
                           outcome="parked", reason=reason, created_at=self.clock.now()
                           ).on_conflict_ignore().execute()
        log.error("uid %s %s: parked, kept on the server: %s", uid, message_id, reason)
        return Outcome("parked", message_id, sender, subject, reason)
