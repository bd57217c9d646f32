"""History and search: the items `inboxd items` filters for, and a requester's other items.

Words are looked up in what people wrote, the incoming mail stored for each item (our own mail is
templates around it), through the full-text index of migration 10 (`models._v10_search`):
SQLite's FTS5 or PostgreSQL's text search. Where there is none (a SQLite without FTS5, or its
index gone), LIKE reads every mail instead: slower, and it finds a word inside a longer one too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo

import peewee as pw

from .domain import OPEN_STATUSES
from .models import SEARCH_INDEX, Item, Message, db, fts5_available, team

OTHERS_SHOWN = 10  # `inboxd item`: how many of the requester's other items it lists


@dataclass(frozen=True)
class Filters:
    """What `inboxd items` asks for: every filter given must hold."""

    queue: str | None = None
    owner: str | None = None
    requester: str | None = None
    text: str | None = None
    since: datetime | None = None
    status: str | None = None  # any status, open or not
    tag: str | None = None
    open_only: bool = True  # without `status`: only the open items
    teams: tuple[str, ...] | None = None  # the teams' keys; None: every team

    def given(self) -> bool:
        """Some filter narrows the list (beyond open or all)."""
        return any(value is not None for value in (self.queue, self.owner, self.requester, self.text, self.since,
                                                    self.status, self.tag))


def words(text: str) -> list[str]:
    """The words to find: separated by white space; one without a letter or digit has nothing to find."""
    return [word for word in text.split() if re.search(r"[^\W_]", word)]


def since_moment(text: str, tz: tzinfo) -> datetime:
    """An ISO 8601 date or moment; without an offset, in the team's timezone (ValueError if it is neither)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date or moment (like 2026-11-01 or 2026-11-01T09:00+01:00)"
                         ) from None
    if not 1970 <= moment.year <= 9000:
        raise ValueError(f"{text!r} is outside the years 1970 to 9000")
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def engine() -> str:
    """How this database finds words: "postgres", "fts5", or "like" (no index to ask)."""
    database = db.obj
    if isinstance(database, pw.PostgresqlDatabase):
        return "postgres"
    if fts5_available(database) and database.table_exists(SEARCH_INDEX):
        return "fts5"
    return "like"


def _items_with(word: str, how: str) -> pw.SelectQuery:
    """The ids of the items with an incoming mail whose subject or text holds this word."""
    mails = Message.select(Message.item).where(Message.item.is_null(False))
    if how == "fts5":  # it holds incoming mail only; asked about its direction, SQLite would read each one
        phrase = '"' + word.replace('"', '""') + '"'  # FTS5's syntax (* - : ^ NEAR AND OR NOT parentheses) is text
        return mails.where(Message.id.in_(
            pw.SQL(f"(SELECT rowid FROM {SEARCH_INDEX} WHERE {SEARCH_INDEX} MATCH ?)", [phrase])))
    mails = mails.where(Message.direction == "in")
    if how == "postgres":  # the expression and condition of the GIN index, to the letter, so that it is used
        text = pw.fn.to_tsvector("simple", Message.subject.concat(" ").concat(Message.body))
        return mails.where(pw.Expression(text, "@@", pw.fn.plainto_tsquery("simple", word)))
    return mails.where(Message.subject.contains(word) | Message.body.contains(word))


def matching(filters: Filters) -> Iterator[Item]:
    """The items that pass every filter, in creation order, read as they are needed."""
    query = Item.select().order_by(Item.id)
    if filters.teams is not None:
        query = query.where(Item.team.in_(list(filters.teams)))
    if filters.status:
        query = query.where(Item.status == filters.status)
    elif filters.open_only:
        query = query.where(Item.status.in_(OPEN_STATUSES))
    if filters.queue:
        query = query.where(Item.queue == filters.queue)
    if filters.owner:
        query = query.where(Item.owner == filters.owner.strip().lower())
    if filters.requester is not None:  # addresses are stored lower-cased: the index answers
        query = query.where(Item.requester == filters.requester.strip().lower())
    if filters.since:
        query = query.where(Item.created_at >= filters.since)
    if filters.tag:  # the quoted tag in the JSON text; LIKE ignores case, and "a\"b" holds "b": checked below
        query = query.where(Item.tags.cast("text").contains(json.dumps(filters.tag)))
    how = engine() if filters.text else "like"
    for word in words(filters.text or ""):  # each word in any mail of the item: all of them, in any order
        query = query.where(Item.id.in_(_items_with(word, how)))
    for row in query.iterator():
        if not filters.tag or filters.tag in (row.tags or ()):
            yield row


def others(item_id: int, requester: str) -> list[Item]:
    """The requester's other items with this thread's team, newest first, up to OTHERS_SHOWN: what else they asked."""
    if not requester:  # mail with no usable sender: those items are not one person's
        return []
    return list(Item.select(Item.id, Item.status, Item.created_at, Item.subject)
                .where((Item.requester == requester) & (Item.id != item_id) & (Item.team == team()))
                .order_by(Item.id.desc()).limit(OTHERS_SHOWN))
