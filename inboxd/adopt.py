"""First contact with a mailbox: what is already there, the admin's choice (`inboxd adopt`), what gets read.

Pure: the daemon surveys the folder and keeps the choice (`MailboxState`); this module decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from .config import Config
from .errors import InboxdError
from .wording import local_day, local_time

NOW, ALL = "now", "all"
EXAMPLE_DAYS = 7  # the day the first-contact message suggests: a week before the newest mail


class FirstContact(InboxdError):
    """No saved state for a mailbox that already holds mail: inboxd waits for the admin's choice."""


@dataclass(frozen=True)
class Found:
    """A folder at first contact: when each mail inboxd has not marked done arrived (INTERNALDATE, by UID)."""

    arrivals: Mapping[int, datetime]
    highest_uid: int  # of any mail in the folder, marked done or not

    def since(self, moment: datetime | None) -> list[int]:
        """The UIDs of the mail that arrived at or after `moment` (all of them for None)."""
        return sorted(uid for uid, at in self.arrivals.items() if moment is None or at >= moment)


@dataclass(frozen=True)
class Adoption:
    """Where reading starts, and what becomes of the backlog: the mail up to `backlog_uid`, there at first contact."""

    last_uid: int  # mail above this UID is read
    backlog_uid: int
    since: datetime | None = None  # backlog mail that arrived before this is left alone
    ack: bool = True  # False: backlog mail becomes items, and no mail at all is sent for it


def parse_choice(text: str, config: Config) -> str | datetime:
    """`now`, `all`, or a day (2026-11-01) as its first moment in the team's timezone."""
    word = text.strip().lower()
    if word in (NOW, ALL):
        return word
    try:
        day = date.fromisoformat(word)
    except ValueError:
        raise InboxdError(f"adopt: {text!r} is not a choice: say now, all, or a day like 2026-11-01") from None
    return datetime.combine(day, time(), config.calendar.tz)


def adoption(choice: str | datetime, ack: bool, found: Found) -> Adoption:
    """The adoption a choice means for what was found."""
    if choice == NOW:
        return Adoption(found.highest_uid, found.highest_uid, None, ack)
    return Adoption(0, found.highest_uid, choice if isinstance(choice, datetime) else None, ack)


def left_alone(uids: Iterable[int], backlog_uid: int, since: datetime | None,
               arrivals: Mapping[int, datetime]) -> set[int]:
    """The backlog's UIDs that are not read: mail inboxd marked done (not in `arrivals`), or older than `since`.

    By date, not by UID: an old mail copied into the folder late has a high UID and an old date.
    """
    return {uid for uid in uids if uid <= backlog_uid
            and (uid not in arrivals or (since is not None and arrivals[uid] < since))}


def first_contact_message(config: Config, found: Found) -> str:
    """What the admin reads when `run` or `once` stops at first contact: what is there, each choice, the commands."""
    tz, count = config.calendar.tz, len(found.arrivals)
    oldest, newest = min(found.arrivals.values()), max(found.arrivals.values())
    day = (newest.astimezone(tz) - timedelta(days=EXAMPLE_DAYS)).date()
    recent = len(found.since(datetime.combine(day, time(), tz)))
    command = f"inboxd --config {config.path}"
    team = f" --team {config.team.key}" if config.team_file is not None else ""  # one of several: name it
    return "\n".join([
        f"first contact with {config.mailbox.label}: it already holds {count} mail(s) that inboxd has never "
        f"read, from {local_time(oldest, tz)} to {local_time(newest, tz, zone=True)}.",
        "inboxd stopped before reading any of them, so that nobody is answered by surprise: nothing was sent,",
        "and none of this mail was touched. Choose what becomes of it, then start inboxd again:",
        "",
        f"  {command} adopt now{team}",
        f"      leave these {count} mail(s) alone; track only mail that arrives from now on",
        f"  {command} adopt {day.isoformat()}{team}",
        f"      track the mail that arrived since that day ({recent} of {count}); leave the older mail alone",
        f"  {command} adopt all{team}",
        f"      track all {count} mail(s)",
        "",
        "Tracked mail becomes items and is acknowledged like any new request. Add --no-ack to track it without",
        "a word: the items are created (their history says \"adopted without acknowledgement\"), and no mail is",
        "sent for them, neither to the requester nor to the team. Mail that arrives later is answered as usual.",
        "Add --dry-run to see what a choice would do (items, mails and to whom) without doing it.",
    ])


def describe(adopted: Adoption, found: Found, config: Config) -> str:
    """`inboxd adopt`'s first line: what will be read and what is left alone."""
    tracked = [] if adopted.last_uid >= adopted.backlog_uid else found.since(adopted.since)
    left, count = len(found.arrivals) - len(tracked), len(found.arrivals)
    where = config.mailbox.label
    if not tracked:
        return f"adopted {where}: {count} mail(s) there are left alone; inboxd reads the mail that arrives from now on"
    since = f" since {local_day(adopted.since, config.calendar.tz)}" if adopted.since else ""
    how = "acknowledged like any new request" if adopted.ack else \
        "tracked without acknowledgement: no mail is sent for them"
    return (f"adopted {where}: {len(tracked)} of {count} mail(s) there{since} become items, {how}"
            f"{f'; {left} older mail(s) are left alone' if left else ''}")
