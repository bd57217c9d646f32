"""The pipeline: the one place that sequences the steps for one incoming mail.

Each step returns a value: decode, guards, thread, decide (intake, conversation or rules),
write (tracker), compose (mailout), enqueue (outbox); all of it in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import peewee as pw

from . import caps, conversation, guards, intake, queries
from .absence import away
from .clock import Clock
from .config import Config
from .domain import ItemView, Plan, PlanKind, Reply
from .errors import DatabaseOutage, InboxdError, MessageError
from .mailout import Composer, OutgoingMail
from .message import InboundMessage, decode, raw_key
from .models import Message, item_mails_since, seen_inbound, write_transaction
from .outbox import enqueue
from .render import Renderer
from .routing import Decision, Decline, Ignore, Queue, Redirect, RuleSet
from .threads import find_thread, item_answered_automatically
from .tracker import BODY_KEPT, Silences, Tracker

log = logging.getLogger(__name__)
MAIL_HELD = "mail_held"  # the lead's mail, once a day, when an item's mail is held (the template's name too)


@dataclass(frozen=True)
class Outcome:
    """What happened to one mail, for logs, the demo and the source."""

    # item | skipped | declined | redirected | ignored | duplicate | parked, or on an existing item
    # a PlanKind: command | refused | relayed | reply | rating | thanks | reopened | recorded
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
        self.tracker = Tracker(config.mailbox.label, Silences(config.calendar, config.service.update_every))
        self.composer = Composer(config, renderer)
        self.threads = queries.StoredThreads()
        self._quiet = False

    def process(self, raw: bytes, uid: int | None = None, cut_from: int = 0, quiet: bool = False) -> Outcome:
        """Handle one raw mail (or the start of a huge one); never raises for a bad mail, it is parked instead.

        `quiet`: a mail of the backlog adopted with --no-ack; it is tracked as usual and causes no mail.
        Raises DatabaseOutage when the database is busy, locked, full or down: that is no fault of
        the mail, which is left as it is for the caller to try again.
        """
        self._quiet = quiet
        try:
            msg = decode(raw, cut_from)
        except MessageError as exc:
            return self._park(raw, uid, str(exc))
        try:
            with write_transaction():
                return self._process(msg, uid)
        except DatabaseOutage:
            raise
        except pw.IntegrityError as exc:
            with write_transaction():  # a read too: an outage here is said as one, not as a crash
                concurrent = seen_inbound(msg.message_id, msg.fingerprint)
            if concurrent:  # another worker recorded it first
                return Outcome("duplicate", msg.message_id, msg.sender, msg.subject, "recorded concurrently")
            return self._park(raw, uid, f"database refused it: {exc}", msg)
        except InboxdError as exc:
            return self._park(raw, uid, f"{type(exc).__name__}: {exc}", msg)
        except Exception as exc:
            log.exception("uid %s %s: unexpected error; the mail stays on the server", uid, msg.message_id)
            return self._park(raw, uid, f"unexpected {type(exc).__name__}: {exc}", msg)

    def _process(self, msg: InboundMessage, uid: int | None) -> Outcome:
        now, team = self.clock.now(), self.config.team
        seen = seen_inbound(msg.message_id, msg.fingerprint, msg.old_fingerprint, msg.raw_size)
        if seen is not None and seen[1] == "parked":
            self.tracker.forget_parked(seen[0])  # parked before (e.g. a broken template since fixed): try again
        elif seen is not None:  # the same mail again (delivered twice, or read again): noted where the first went
            record, outcome, item_id, first_uid = seen
            ref = team.ref(item_id) if item_id is not None else None
            why = f"already processed ({outcome}{f' on {ref}' if ref else ''})"
            self.tracker.event(item_id, Message(id=record), now, "inboxd", "duplicate",
                               f"the same mail again (uid {uid}; first read as uid {first_uid}), {why}: "
                               "not processed again")
            log.info("uid %s %s from %s: duplicate of mail record %d, %s", uid, msg.message_id,
                     msg.sender or "unknown sender", record, why)
            return Outcome("duplicate", msg.message_id, msg.sender, msg.subject, why, ref)
        skip = guards.check(msg, team.address)
        if skip is not None:
            return self._skip(msg, uid, skip, now)
        follows = None
        thread = find_thread(msg, team, self.threads)
        if thread is not None:
            text = conversation.reply_text(msg)
            plan = conversation.decide(self.config, thread.item, msg, text, thread.secret_ok, now, thread.answers)
            if plan.kind != PlanKind.NEW_ITEM:
                return self._converse(msg, uid, text, thread.item, plan, now)
            follows = thread.item  # a reply long after the item closed: a new item that links the old
        elif team.speaks_for_team(msg.sender):
            text = conversation.reply_text(msg)
            member_plan = conversation.member_mail(self.config, msg, text, now)
            if member_plan is not None:
                return self._converse(msg, uid, text, None, member_plan, now)
            answered = self.threads.kind_of_mail(msg.in_reply_to) if msg.in_reply_to else None
            if answered is not None:  # a member answering team mail about no item (a digest): not a request
                why = f"a reply to our {answered} mail, which is about no item: kept as a team note, not a request"
                self.tracker.record_inbound(msg, uid, now, PlanKind.NOTED, why, body=text)
                log.info("%s from %s: %s", msg.message_id, msg.sender, why)
                return Outcome(PlanKind.NOTED, msg.message_id, msg.sender, msg.subject, why)
        return self._dispose(msg, uid, self.rules.decide(msg), now, follows)

    def _converse(self, msg: InboundMessage, uid: int | None, text: str, item: ItemView | None, plan: Plan,
                  now: datetime) -> Outcome:
        """Write a conversation's plan (about an item, or a member's #away about no item) and send its mail."""
        record = self.tracker.record_inbound(msg, uid, now, plan.kind, plan.summary, item.id if item else None, text)
        changed = self.tracker.apply(item, plan, record, now)
        opening = queries.opening_mail(changed.id) if changed is not None and changed.id is not None else None
        request = queries.stored_request(changed, opening) if changed is not None else None
        context = self.composer.context(changed, msg, request) | dict(plan.context)
        self._send(plan.mails, context, changed, now, msg, opening.message_id if opening else None)
        ref = self.config.team.ref(changed.id) if changed is not None else None
        log.info("%s%s from %s: %s", f"{ref}: " if ref else "", plan.kind, msg.sender or "unknown sender",
                 plan.summary)
        return Outcome(plan.kind, msg.message_id, msg.sender, msg.subject, plan.summary, ref)

    def _skip(self, msg: InboundMessage, uid: int | None, skip: guards.Skip, now: datetime) -> Outcome:
        """Store a mail that must not be answered; a bounce or auto-reply to our mail goes on its item."""
        team = self.config.team
        item = item_answered_automatically(msg, team, self.threads) if skip.guard != "own-mail" else None
        item_id = item.id if item is not None else None
        record = self.tracker.record_inbound(msg, uid, now, "skipped", str(skip), item_id,
                                             body=msg.text if item else "")  # kept only with its item
        ref = team.ref(item_id) if item is not None else None
        if item is not None:
            bounced = guards.is_bounce(msg)
            kind, what = ("delivery-failed", "our mail bounced") if bounced else ("auto-reply", "auto-reply")
            self.tracker.event(item_id, record, now, msg.sender or "unknown sender", kind,
                               f"{what}: {msg.subject[:120]!r} ({skip})")
        log.info("uid %s %s from %s: skipped, %s%s", uid, msg.message_id, msg.sender, skip,
                 f"; noted on {ref}" if ref else "")
        return Outcome("skipped", msg.message_id, msg.sender, msg.subject, str(skip), ref)

    def _dispose(self, msg: InboundMessage, uid: int | None, decision: Decision, now: datetime,
                 follows: ItemView | None = None) -> Outcome:
        disposition, team = decision.disposition, self.config.team
        base = (msg.message_id, msg.sender, msg.subject)
        # Auto-responders repeat their text and attach nothing; the same words with other files are new work.
        repeatable = msg.text if not (msg.files or msg.cut_from) and len(msg.text) <= BODY_KEPT else ""
        signs = queries.sender_signs(msg.sender, repeatable, msg.subject, caps.window_start(self.config, now), team)
        if isinstance(disposition, Queue):
            gone = away(team, now) if disposition.assign else {}
            owner = intake.choose_owner(disposition, self.config, queries.StoredAssignments(), gone)
            new = intake.plan_new_item(self.config, msg, decision, owner, gone, now, follows,
                                       self.composer.renderer.languages)
            item, record = self.tracker.open_item(new, msg, uid, now, follows.id if follows else None)
            replies = new.replies if self._quiet else self._within_caps(msg.sender, signs, new.replies, item, record,
                                                                         now)
            self._send(replies, self.composer.context(item, msg), item, now, msg, new=True)
            log.info("%s: created from %s (%s), queue %s, owner %s, due %s", team.ref(item.id),
                     msg.sender or "unknown sender", new.how,
                     item.queue, owner or "none",
                     item.due_at.astimezone(self.config.calendar.tz).isoformat(timespec="minutes")
                     if item.due_at else "-")
            return Outcome("item", *base, str(disposition), team.ref(item.id))
        why = f"rule {decision.rule}: {disposition}"
        kind = {Decline: "declined", Redirect: "redirected", Ignore: "ignored"}[type(disposition)]
        record = self.tracker.record_inbound(msg, uid, now, kind, why)
        self.tracker.event(None, record, now, "inboxd", type(disposition).__name__.lower(), why,
                           decision.trace_json())
        replies = intake.replies_for(disposition, msg.sender)
        replies = replies if self._quiet else self._within_caps(msg.sender, signs, replies, None, record, now)
        language = intake.language_of(self.config, msg, disposition, self.composer.renderer.languages)
        context = self.composer.context(None, msg, disposition=disposition, language=language)
        self._send(replies, context, None, now, msg)
        log.info("%s from %s: %s", msg.message_id, msg.sender, why)
        return Outcome(kind, *base, why)

    def _within_caps(self, sender: str, signs: caps.SenderSigns, replies: Sequence[Reply], item: ItemView | None,
                     record: Message, now: datetime) -> list[Reply]:
        """The replies a new mail may send: no automatic answer to what looks like a loop, a flood's news batched.

        Without an item (a decline, a redirect) a loop's mail makes no mail at all.
        """
        kept, where = list(replies), self.config.team.ref(item.id) if item else record.message_id
        why = caps.why_not_answered(self.config, sender, signs)
        if why is not None:
            kept = [r for r in kept if r.internal] if item is not None else []
            self.tracker.event(item.id if item else None, record, now, "inboxd", "flood-cap", why)
            log.info("%s: %s", where, why)
        held = caps.why_announcement_held(self.config, sender, signs) if item is not None else None
        if item is not None and item.id is not None and held is not None and any(r.internal for r in kept):
            kept = [r for r in kept if not r.internal]
            self.tracker.hold_announcement(item.id, item.queue, now)
            self.tracker.event(item.id, record, now, "inboxd", "announcement-held", held)
            log.info("%s: %s", where, held)
        return kept

    def _send(self, replies: Sequence[Reply], context: dict, item: ItemView | None, now: datetime,
              msg: InboundMessage, opening_id: str | None = None, new: bool = False) -> None:
        """Compose the mails and put them in the outbox, in this transaction; an item past its bound sends none.

        `new`: the item was opened in this transaction, so it has sent nothing yet.
        """
        if self._quiet:
            unsent = "; ".join(f"{r.template} to {', '.join(r.to)}" for r in replies) or "none"
            if item is not None:
                self.tracker.event(item.id, None, now, "inboxd", "adopted",
                                   f"adopted without acknowledgement (inboxd adopt --no-ack): the mail was there "
                                   f"before inboxd first read the mailbox; no mail sent (it would have been: {unsent})")
            return
        if not replies:
            return
        history = queries.history(item.id) if item is not None and item.id is not None \
            and any(r.with_history for r in replies) else None
        mails = self.composer.compose(replies, context, item, now, msg, opening_id, history)
        if item is not None and item.id is not None and not new:
            sent = item_mails_since(item.id, caps.window_start(self.config, now))
            why = caps.why_item_held(self.config, sent)
            if why is not None:
                self._hold(item, mails, why, context, now)
                return
        for mail in mails:
            enqueue(mail, item.id if item is not None else None, now)

    def _hold(self, item: ItemView, mails: list[OutgoingMail], why: str, context: dict, now: datetime) -> None:
        """Keep an item's mail back (its history says which and why); the lead hears of it once a day."""
        assert item.id is not None
        team = self.config.team
        what = "; ".join(f"{m.kind} to {', '.join(m.to)}" for m in mails)
        self.tracker.event(item.id, None, now, "inboxd", "mail-held", f"{what}: {why}")
        day = now.astimezone(self.config.calendar.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        if not self.tracker.claim_notice(MAIL_HELD, item.id, day, "", now):
            log.info("%s: %s: %s", team.ref(item.id), what, why)
            return
        log.warning("%s: %s: %s; the lead is told", team.ref(item.id), what, why)
        told = Reply(MAIL_HELD, (team.lead,), threaded=False, internal=True,
                     extra={"held": {"why": why, "mails": what}})
        for mail in self.composer.compose([told], context, item, now):
            enqueue(mail, item.id, now)

    def _park(self, raw: bytes, uid: int | None, reason: str, msg: InboundMessage | None = None) -> Outcome:
        """Record a mail that cannot be handled; it stays on the server for a person."""
        message_id = msg.message_id if msg else raw_key(raw)
        sender, subject = (msg.sender, msg.subject) if msg else ("", "")
        fingerprint = msg.fingerprint if msg else raw_key(raw)
        try:
            with write_transaction():
                self.tracker.record_parked(message_id, fingerprint, uid, sender, subject, len(raw), reason,
                                           self.clock.now())
        except pw.DatabaseError as exc:  # not even this note can be written: it is the database, not the mail
            raise DatabaseOutage(f"database unavailable: cannot record a parked mail: {exc}") from exc
        log.error("uid %s %s: parked, kept on the server: %s", uid, message_id, reason)
        return Outcome("parked", message_id, sender, subject, reason)
