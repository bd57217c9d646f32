"""The domain's words: statuses, priorities, an item as deciders see it, the mails and plans they return.

Nothing here knows about storage, the outbox or the network: guards, routing, threads, reply
text, commands and conversation speak only these types, and the tracker turns them into rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Status(StrEnum):
    """Where an item stands; the first four are open."""

    NEW = "new"
    OPEN = "open"
    WORKING = "working"
    WAITING = "waiting"
    DONE = "done"
    DECLINED = "declined"
    REDIRECTED = "redirected"


STATUSES = tuple(Status)
OPEN_STATUSES = (Status.NEW, Status.OPEN, Status.WORKING, Status.WAITING)
ACK_WITHIN = timedelta(seconds=60)  # the promise to a requester: acknowledged within a minute


class Priority(StrEnum):
    """How urgent an item is."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


PRIORITIES = tuple(Priority)


class PlanKind(StrEnum):
    """What a mail on an existing item turned out to be."""

    COMMAND = "command"
    REFUSED = "refused"
    RELAYED = "relayed"
    REPLY = "reply"
    RATING = "rating"
    THANKS = "thanks"
    REOPENED = "reopened"
    RECORDED = "recorded"
    NOTED = "noted"  # a member's words kept as a team note (a reply to team mail, or #note)
    STRANGER = "stranger"  # mail on an item from someone not on it: a note, never the requester's word
    NEW_ITEM = "new-item"  # a reply long after the item closed: a new item that links the old


@dataclass(frozen=True)
class ItemState:
    """The fields of an item that commands may change."""

    owner: str | None
    status: str
    priority: str
    tags: tuple[str, ...]
    due_at: datetime | None
    on_track: bool
    waiting_on: str | None
    resolved_at: datetime | None


@dataclass(frozen=True)
class ItemView:
    """A stored item as the deciders and the mail composer see it: a value, never a database row."""

    id: int | None
    subject: str
    requester: str
    requester_name: str = ""
    owner: str | None = None
    queue: str = "default"
    status: str = Status.NEW
    priority: str = Priority.NORMAL
    tags: tuple[str, ...] = ()
    rule: str | None = None
    created_at: datetime | None = None
    due_at: datetime | None = None
    acknowledged_at: datetime | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    satisfaction: int | None = None
    secret: str = ""
    waiting_on: str | None = None
    on_track: bool = False
    follows_id: int | None = None
    last_told_at: datetime | None = None
    paused_at: datetime | None = None
    requested_due_at: datetime | None = None
    participants: tuple[str, ...] = ()  # others on the request's To/Cc: the requester's side of the conversation
    language: str = ""  # the template set its requester is answered in; "" (items older than it): the team's

    @property
    def state(self) -> ItemState:
        """The command-relevant fields."""
        return ItemState(self.owner, self.status, self.priority, self.tags, self.due_at, self.on_track,
                         self.waiting_on, self.resolved_at)

    def changed(self, changes: Mapping[str, Any]) -> ItemView:
        """This item with a plan's field changes applied."""
        known = {f.name for f in fields(self)}
        values = {name: tuple(value) if name == "tags" else value for name, value in changes.items() if name in known}
        return ItemView(**{f.name: getattr(self, f.name) for f in fields(self)} | values)


@dataclass(frozen=True)
class Reply:
    """One mail a disposition, a command, a conversation or a job calls for."""

    template: str
    to: tuple[str, ...]
    threaded: bool = True  # an answer to the request (In-Reply-To); owners and other teams get new mail
    acknowledges: bool = False
    attach_original: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)  # template context on top of the usual
    internal: bool = False  # to the team: Reply-To is the item's secret address when that is on
    to_requester: bool = False
    carry_attachments: bool = False  # the files of the mail being answered go along
    with_history: bool = False  # the item's audit trail goes into the context (a low rating to the lead)
    automatic: bool = False  # an automatic answer to the sender: counts against [limits] automatic_per_sender


EventLine = tuple[str, str, str]  # (actor, kind, detail): one line of an item's history


def frozen(values: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only mapping: a plan, once built, is not changed by whoever applies it."""
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True)
class Plan:
    """Everything one mail on an item means: field changes, history lines, mails and absences. Complete."""

    kind: PlanKind
    changes: Mapping[str, Any] = field(default_factory=frozen)
    events: tuple[EventLine, ...] = ()
    mails: tuple[Reply, ...] = ()
    context: Mapping[str, Any] = field(default_factory=frozen)  # for every mail this plan sends
    away: tuple[tuple[str, datetime | None], ...] = ()  # members away until (None: back)

    @property
    def summary(self) -> str:
        """The history lines on one line, for the log."""
        return "; ".join(detail for _, _, detail in self.events) or str(self.kind)
