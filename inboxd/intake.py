"""Intake: what a new request becomes (fields, owner, history lines, mails), decided before anything is written.

The pipeline writes what this returns; `inboxd rules test` shows the very same decision unsaved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from . import languages
from .domain import EventLine, ItemView, Reply, Status
from .message import InboundMessage
from .promises import promised_date
from .requested import requested_date
from .routing import Decision, Decline, Disposition, Queue, Redirect
from .settings import Config
from .threads import without_tags
from .wording import local_time


class AssignmentHistory(Protocol):
    """What the assignment strategies need to know of earlier items."""

    def last_owner(self, queue: str, members: tuple[str, ...]) -> str | None:
        """Who got this queue's last assigned item, among these members."""
        ...

    def open_counts(self, members: tuple[str, ...]) -> dict[str, int]:
        """How many open items each of these members owns."""
        ...


def _round_robin(queue: str, members: tuple[str, ...], history: AssignmentHistory) -> str:
    """The member after the one who got this queue's last assigned item."""
    last = history.last_owner(queue, members)
    if last is None or last not in members:
        return members[0]
    return members[(members.index(last) + 1) % len(members)]


def _least_loaded(queue: str, members: tuple[str, ...], history: AssignmentHistory) -> str:
    """The member with the fewest open items; ties go to the first listed."""
    counts = history.open_counts(members)
    return min(members, key=lambda m: (counts.get(m, 0), members.index(m)))


STRATEGIES: dict[str, Callable[[str, tuple[str, ...], AssignmentHistory], str]] = {
    "round-robin": _round_robin,
    "least-loaded": _least_loaded,
}


def choose_owner(disposition: Queue, config: Config, history: AssignmentHistory,
                 away: Collection[str] = ()) -> str | None:
    """Who gets a new item in this queue, by the rule's `assign`; members who are away are skipped."""
    if not disposition.assign:
        return None
    strategy = STRATEGIES.get(disposition.assign)
    if strategy is None:
        return disposition.assign if disposition.assign not in away else None
    members = config.queues.get(disposition.queue) or tuple(m.email for m in config.team.members)
    members = tuple(m for m in members if m not in away)
    return strategy(disposition.queue, members, history) if members else None


def language_of(config: Config, msg: InboundMessage, disposition: Disposition, sets: Collection[str]) -> str:
    """The template set the requester is answered in: the rule's, else the mail's Content-Language, else the team's."""
    return languages.choose(getattr(disposition, "language", None), msg.header("Content-Language"), sets,
                            config.team.language)


def draft_item(config: Config, msg: InboundMessage, decision: Decision, owner: str | None,
               now: datetime, sets: Collection[str] = ()) -> ItemView:
    """The new item for this mail, not saved yet (its id is None); `sets`: the template sets there are."""
    disposition = decision.disposition
    assert isinstance(disposition, Queue)
    requested = requested_date(f"{msg.subject}\n{msg.text}", now, config.calendar) \
        if disposition.honour_requested_date else None
    return ItemView(
        id=None, subject=without_tags(msg.subject, config.team.ref_prefix) or "(no subject)",
        requester=msg.sender, requester_name=msg.sender_name, owner=owner, queue=disposition.queue,
        status=Status.OPEN if owner else Status.NEW, priority=disposition.priority, tags=disposition.tags,
        rule=decision.rule, created_at=now, last_told_at=now,
        due_at=promised_date(config.calendar, config.service, now, disposition.due_in, requested),
        requested_due_at=requested, participants=participants(config, msg),
        language=language_of(config, msg, disposition, sets))


PARTICIPANTS = 20  # others on a request remembered as its requester's side; a huge Cc list adds nothing more


def participants(config: Config, msg: InboundMessage) -> tuple[str, ...]:
    """The request's other recipients, but not the team, its own addresses or the requester."""
    team = config.team
    local, _, domain = team.address.partition("@")
    ours = re.compile(rf"{re.escape(local)}(\+[^@]*)?@{re.escape(domain)}", re.IGNORECASE)
    others = (a for a in (*msg.to[:PARTICIPANTS], *msg.cc[:PARTICIPANTS])
              if a != msg.sender and not ours.fullmatch(a) and not team.speaks_for_team(a))
    return tuple(dict.fromkeys(others))[:PARTICIPANTS]


def replies_for(disposition: Disposition, sender: str, owner: str | None = None,
                queue_members: tuple[str, ...] = ()) -> list[Reply]:
    """The mails a disposition sends. A new item goes to its owner, or, unassigned, to the queue's members."""
    to_sender = (sender,) if sender else ()
    if isinstance(disposition, Queue):
        template = disposition.ack_template()
        team = [Reply("assigned", (owner,), threaded=False, internal=True)] if owner else \
            [Reply("new_request", queue_members, threaded=False, internal=True)] if queue_members else []
        # The requester, who waits, first: the outbox sends in the order mail was queued.
        return ([Reply(template, to_sender, acknowledges=True, automatic=True)] if template and sender else []) + team
    if isinstance(disposition, Decline):
        return [Reply(disposition.template, to_sender, automatic=True)] if sender else []
    if isinstance(disposition, Redirect):
        return [Reply("forwarded", (disposition.to,), threaded=False, attach_original=True)] + \
            ([Reply(disposition.template, to_sender, automatic=True)] if sender else [])
    return []


@dataclass(frozen=True)
class NewItem:
    """Everything a new request becomes: the item, its first history lines and the mails it sends."""

    item: ItemView
    events: tuple[EventLine, ...]  # after the `created` line, which carries the rule trace
    replies: tuple[Reply, ...]
    how: str  # which rule placed it
    disposition: str  # what the rules said, in words
    trace: tuple[dict[str, Any], ...]  # each rule tried, for the `created` line

    @property
    def created(self) -> str:
        """The first line of the item's history."""
        return f"from {self.item.requester or 'unknown sender'} by {self.how}: {self.disposition}"


def plan_new_item(config: Config, msg: InboundMessage, decision: Decision, owner: str | None,
                  away: Collection[str], now: datetime, follows: ItemView | None = None,
                  sets: Collection[str] = ()) -> NewItem:
    """The new item for a mail the rules put in a queue, and what it says and sends (in one of `sets`)."""
    disposition = decision.disposition
    assert isinstance(disposition, Queue)
    item = draft_item(config, msg, decision, owner, now, sets)
    how = f"rule {decision.rule}" if decision.rule else "no rule matched: default queue"
    events: list[EventLine] = []
    if msg.cut_from:
        events.append(("inboxd", "oversized",
                       f"a mail of {msg.cut_from / 1024 / 1024:.1f} MB: only its headers and the start of its text "
                       f"were read; the files stay on the server ([limits] max_message_size)"))
    if follows is not None:
        events.append(("inboxd", "follows", f"follows {config.team.ref(follows.id)}, closed too long ago to reopen"))
    if owner:
        events.append(("inboxd", "assigned", f"assigned to {owner} ({disposition.assign})"))
    elif disposition.assign and away:
        events.append(("inboxd", "not-assigned",
                       f"{disposition.assign}: skipped {', '.join(sorted(away))} (away); left for the queue"))
    if item.requested_due_at is not None:
        promised = "promised" if item.due_at == item.requested_due_at else "cannot be promised"
        events.append(("inboxd", "requested-date",
                       f"the requester asked for {local_time(item.requested_due_at, config.calendar.tz)}: {promised}"))
    if item.language != config.team.language:  # why this requester is not answered in the team's language
        why = "the rule's language" if disposition.language else f"Content-Language: {msg.header('Content-Language')}"
        events.append(("inboxd", "language", f"the requester is answered in {item.language} ({why})"))
    if disposition.ack_template() and not msg.sender:
        events.append(("inboxd", "not-acknowledged", "the mail has no sender address"))
    members = () if owner or not config.service.announce_new else config.queues.get(item.queue, ())
    return NewItem(item, tuple(events), tuple(replies_for(disposition, msg.sender, owner, members)),
                   how, str(disposition), tuple(decision.trace_json()))
