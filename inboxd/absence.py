"""Members who are away: `[team] absent` in the config, or `#away until DATE` by mail."""

from __future__ import annotations

from datetime import datetime, tzinfo

from .domain import ItemView
from .models import Event, members_away
from .settings import TeamConfig
from .wording import local_day, short_time


def away(team: TeamConfig, now: datetime) -> dict[str, datetime | None]:
    """Who is away as of `now`, with the date they are back (None: until the config says otherwise)."""
    found: dict[str, datetime | None] = {address: None for address in team.absent}
    for member, until in members_away(now):
        found.setdefault(member, until)
    return found


def absence_notes(item: ItemView, gone: dict[str, datetime | None], tz: tzinfo) -> list[str]:
    """What the lead should know of the owner's absence: `gone` (from `away`), and their out-of-office replies."""
    if not item.owner:
        return []
    notes = []
    if item.owner in gone:
        until = gone[item.owner]
        notes.append(f"{item.owner} is away" + (f" until {local_day(until, tz)}" if until else
                                                " ([team] absent)"))
    mine = (Event.item == item.id) & (Event.kind == "auto-reply") & (Event.actor == item.owner)
    replies = Event.select().where(mine).order_by(Event.at.desc()).limit(1)
    for event in replies:
        notes.append(f"{item.owner} answered with an out-of-office reply on {short_time(event.at, tz)}: "
                     f"{event.detail}")
    return notes
