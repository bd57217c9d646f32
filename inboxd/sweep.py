"""The jobs (docs/promises.md): what is due as of a moment, asked of the database, and sent at most once."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import peewee as pw

from . import metrics, queries
from .absence import absence_notes, away
from .digest import digest, picture
from .domain import OPEN_STATUSES, ItemView, Reply
from .errors import DatabaseOutage, InboxdError
from .leases import claim_run
from .mailout import Composer
from .models import Item, JobRun, Notice, team, write_transaction
from .outbox import enqueue
from .promises import Cutoffs
from .queries import not_paused
from .render import Renderer
from .settings import Config
from .tracker import HELD, Tracker
from .wording import local_time

log = logging.getLogger(__name__)
HELD_BATCH = timedelta(minutes=10)  # how long a held announcement waits for others to go out with it
BATCH = 500  # mails of one kind per sweep: a backlog drains over a few sweeps while new mail keeps flowing
TO_REQUESTER = ("deadline_notice", "status_update")


@dataclass(frozen=True)
class Due:
    """One mail a job calls for: what, about which item (none for a digest), to whom, and why."""

    kind: str
    item: ItemView | None
    for_date: datetime
    to: tuple[str, ...]
    why: str
    audience: str = ""  # a digest's recipient: "team" or a member's address
    context: dict[str, Any] = field(default_factory=dict)
    covers: tuple[int, ...] = ()  # the held items a batch announces


class Sweeper:
    """Runs the jobs as of a moment: the daemon every minute, `inboxd sweep --at` for any moment."""

    def __init__(self, config: Config, renderer: Renderer) -> None:
        self.config = config
        self.tracker = Tracker(config.mailbox.label)
        self.composer = Composer(config, renderer)
        self._failing: set[tuple] = set()  # mails whose failure was logged: once at ERROR, not every minute

    def due(self, now: datetime) -> list[Due]:
        """Every mail the jobs call for as of `now` that has not gone out yet."""
        cal, team = self.config.calendar, self.config.team
        cut = Cutoffs.at(now, cal, self.config.service)
        gone = away(team, now)
        found: list[Due] = []
        for item, due_at in self._items("owner_reminder", Item.due_at, cut.remind,
                                        Item.on_track == False):  # noqa: E712
            to = self._owners(item, gone)
            whose = "" if to == (item.owner,) else "; to the queue: nobody owns it" if not item.owner else \
                f"; to the queue: {item.owner} is away"
            found.append(Due("owner_reminder", item, due_at, to, f"due {self._when(due_at)}"
                             + (", already passed" if due_at <= now else "") + "; not confirmed with #ontrack"
                             + whose,
                             context={"absence": absence_notes(item, gone, cal.tz)}))
        for item, due_at in self._items("deadline_notice", Item.due_at, cut.notify,
                                        Item.on_track == False, Item.requester != ""):  # noqa: E712
            found.append(Due("deadline_notice", item, due_at, (item.requester,),
                             f"due {self._when(due_at)}, not done and not confirmed with #ontrack"))
        noticed = {due.item.id for due in found if due.kind == "deadline_notice" and due.item is not None}
        for item, due_at in self._items("escalation", Item.due_at, now):
            told = item.id in noticed or Notice.select().where(  # a notice in this very sweep counts too
                (Notice.item == item.id) & (Notice.kind == "deadline_notice") & (Notice.for_date == due_at)).exists()
            found.append(Due("escalation", item, due_at, (team.lead,), f"promised for {self._when(due_at)}, not done",
                             context={"absence": absence_notes(item, gone, cal.tz), "requester_told": told}))
        for item, told_at in self._items("status_update", Item.last_told_at, cut.update, Item.requester != ""):
            if item.id in noticed:
                continue  # the notice tells them where it stands; a second mail would only be noise
            found.append(Due("status_update", item, told_at, (item.requester,),
                             f"the requester last heard from us {self._when(told_at)} "
                             f"(update every {self.config.service.update_every})"))
        return found + self._digests(now, cut, gone) + self._held_requests(now, gone)

    @metrics.SWEEP_DURATION.time()
    def run(self, now: datetime, worker: str = "") -> list[Due]:
        """Send what is due, each in its own transaction with its Notice row: a second sweep finds it done.

        A mail that cannot be rendered (a template failing on one item's data) is logged, left unsent
        and tried again by each sweep; the others go out. A `worker` (of several on PostgreSQL) first
        claims the sweep of this team at this minute: another worker's sweep of it does nothing.
        """
        if worker and not self.claim(now, worker):
            log.debug("sweep: another worker swept as of %s", self._when(now))
            return []
        sent = []
        for due in self.due(now):
            key = (due.kind, due.item.id if due.item is not None else due.audience, due.for_date)
            try:
                if not self._send(due, now):
                    continue  # another sweep (another process) sent it first
            except DatabaseOutage:
                raise  # no fault of this mail: the whole sweep waits for the database
            except InboxdError as exc:
                first = key not in self._failing
                self._failing.add(key)
                (log.error if first else log.debug)("%s: %s to %s not sent, tried again each sweep: %s",
                                                    self._about(due), due.kind, ", ".join(due.to), exc)
                continue
            self._failing.discard(key)
            sent.append(due)
        if sent:
            log.info("sweep: %d mail(s) sent as of %s", len(sent), self._when(now))
        return sent

    def claim(self, now: datetime, worker: str) -> bool:
        """Claim `sweep:<team>` at the minute of `now`, in a transaction of its own; forget a day-old claim."""
        job, minute = f"sweep:{team()}", now.replace(second=0, microsecond=0)
        with write_transaction():
            JobRun.delete().where((JobRun.job == job) & (JobRun.moment < minute - timedelta(days=1))).execute()
            return claim_run(job, minute, worker)

    def _about(self, due: Due) -> str:
        return self.config.team.ref(due.item.id) if due.item is not None else f"{due.kind} for {due.audience}"

    def _items(self, kind: str, date_field: pw.Field, cutoff: datetime,
               *more: pw.Expression) -> list[tuple[ItemView, datetime]]:
        """Open, running items due by the cutoff with no notice of this kind for that date; each with the date."""
        sent = Notice.select(Notice.id).where((Notice.item == Item.id) & (Notice.kind == kind)
                                              & (Notice.for_date == date_field))
        condition = (Item.team == team()) & Item.status.in_(OPEN_STATUSES) & (date_field <= cutoff) & not_paused() \
            & ~pw.fn.EXISTS(sent)
        for extra in more:
            condition &= extra
        rows = Item.select().where(condition).order_by(date_field, Item.id).limit(BATCH)
        found = [(queries.view(row), getattr(row, date_field.name)) for row in rows]
        if len(found) == BATCH:
            log.info("sweep: more than %d %s mails are due; the rest follow in the next sweeps", BATCH, kind)
        return found

    def _owners(self, item: ItemView, gone: dict[str, datetime | None]) -> tuple[str, ...]:
        """Who should act on an item: its owner, or, when nobody owns it or the owner is away, its queue."""
        if item.owner and item.owner not in gone:
            return (item.owner,)
        members = tuple(m for m in self.config.queues.get(item.queue, ()) if m not in gone)
        return members or (self.config.team.lead,)

    def _digests(self, now: datetime, cut: Cutoffs, gone: dict[str, datetime | None]) -> list[Due]:
        """This week's digest for the lead and for each member with items, unless sent already."""
        weekly = self.config.service.digest
        if weekly is None:
            return []
        slot = weekly.last(now, self.config.calendar.tz)
        if not Item.select().where((Item.team == team()) & (Item.created_at < slot)).exists():
            return []  # inboxd was not in use yet that week: nothing to report
        sent = {audience for (audience,) in Notice.select(Notice.audience).where(
            (Notice.team == team()) & Notice.item.is_null() & (Notice.kind == "digest")
            & (Notice.for_date == slot)).tuples()}
        found = []
        if "team" not in sent:
            found.append(Due("digest", None, slot, (self.config.team.lead,), f"weekly digest ({weekly})", "team",
                             {"digest": digest(self.config, now, slot, cut.at_risk)
                              | {"picture": picture(self.config, now, slot)}}))
        for member in self.config.team.members:
            if member.email in sent or member.email in gone:
                continue
            figures = digest(self.config, now, slot, cut.at_risk, member.email)
            if figures["open"] or figures["new"] or figures["done"]:
                found.append(Due("digest", None, slot, (member.email,), f"weekly digest for {member.name}",
                                 member.email, {"digest": figures | {"picture": picture(self.config, now, slot,
                                                                                        member.email)}}))
        return found

    def _held_requests(self, now: datetime, gone: dict[str, datetime | None]) -> list[Due]:
        """One batch per queue of the new items whose announcement was held (a flood from one sender).

        A batch goes once the oldest waited HELD_BATCH, so a flood makes one mail per queue that often.
        """
        held = list(Notice.select(Notice.item, Notice.audience, Notice.for_date)
                    .where((Notice.team == team()) & (Notice.kind == HELD))
                    .order_by(Notice.for_date, Notice.id).limit(BATCH).tuples())
        queues: dict[str, list[tuple[int, datetime]]] = {}
        for item_id, queue, since in held:
            queues.setdefault(queue, []).append((item_id, since))
        found = []
        for queue, waiting in queues.items():
            oldest = waiting[0][1]
            if now - oldest < HELD_BATCH and len(held) < BATCH:
                continue
            items = [queries.item(item_id) for item_id, _ in waiting]
            lines = [{"ref": self.config.team.ref(i.id), "subject": i.subject, "requester": i.requester,
                      "owner": i.owner, "due_at": i.due_at} for i in items if i is not None]
            to = tuple(m for m in self.config.queues.get(queue, ()) if m not in gone) or (self.config.team.lead,)
            found.append(Due("held_requests", None, now, to, f"{len(lines)} new request(s) held back since "
                             f"{self._when(oldest)}", f"queue:{queue}", {"held": lines, "queue": queue},
                             tuple(item_id for item_id, _ in waiting)))
        return found

    def _send(self, due: Due, now: datetime) -> bool:
        """Compose the mail, then claim its notice and queue it in one transaction; False if claimed already."""
        item, team = due.item, self.config.team
        to_requester = due.kind in TO_REQUESTER
        opening = queries.opening_mail(item.id) if item is not None and item.id is not None else None
        request = queries.stored_request(item, opening) if item is not None else {
            "subject": "", "sender": "", "sender_name": "", "summary": "", "text": "", "attachments": []}
        context = self.composer.context(item, None, request=request) | due.context | {"now": now}
        reply = Reply(due.kind, due.to, threaded=False, internal=item is not None and not to_requester,
                      to_requester=to_requester)
        mails = self.composer.compose([reply], context, item, now, opening_id=opening.message_id if opening else None)
        item_id = item.id if item is not None else None
        with write_transaction():
            if not self.tracker.claim_notice(due.kind, item_id, due.for_date, due.audience, now):
                return False
            for mail in mails:
                enqueue(mail, item_id, now)
            if due.covers:
                self.tracker.announced(due.covers, due.to, now)
            if item_id is not None:
                self.tracker.job_sent(item_id, due.kind, due.to, due.why, to_requester, now)
        if item is None:
            log.info("%s sent to %s%s", due.kind.replace("_", " "), ", ".join(due.to),
                     f": {', '.join(self.config.team.ref(i) for i in due.covers)}" if due.covers else "")
        else:
            log.info("%s: %s to %s: %s", team.ref(item.id), due.kind.replace("_", " "), ", ".join(due.to), due.why)
        return True

    def _when(self, moment: datetime) -> str:
        return local_time(moment, self.config.calendar.tz)
