"""How inboxd words things for people: moments in the team's timezone, and "did you mean …?"."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from datetime import datetime, tzinfo


def local_time(moment: datetime, tz: tzinfo, zone: bool = False) -> str:
    """A moment as people read it in the team's timezone, e.g. `Fri 04 Dec 2026 15:00` (+ `CET`)."""
    return moment.astimezone(tz).strftime("%a %d %b %Y %H:%M" + (" %Z" if zone else ""))


def short_time(moment: datetime, tz: tzinfo) -> str:
    """A moment in a table column, e.g. `Fri 04 Dec 15:00`."""
    return moment.astimezone(tz).strftime("%a %d %b %H:%M")


def local_day(moment: datetime, tz: tzinfo) -> str:
    """A day as people read it in the team's timezone, e.g. `Fri 04 Dec 2026`."""
    return moment.astimezone(tz).strftime("%a %d %b %Y")


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice a typo most likely meant, if any is close enough."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6, quote: bool = True) -> str:
    """` (did you mean 'done'?)`, or "" when nothing is close."""
    close = closest(word, choices, cutoff)
    if close is None:
        return ""
    return f" (did you mean {close!r}?)" if quote else f" (did you mean {close}?)"
