"""The date a requester asks for in a mail ("needed by Friday", "Due: 2026-12-04"), read conservatively."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from itertools import islice

from .clock import BusinessCalendar, parse_moment

# A deadline is stated near the top; further down are signatures and forwarded threads full of dates.
_MAX_LINES, _MAX_CHARS = 40, 4000

# Only these phrases introduce a date. "needed by", "need it by" and "benötigt bis" end in "by" / "bis".
_PHRASE = re.compile(r"\b(?:due\s+date|due|deadline|frist|no\s+later\s+than|before|until|by"
                     r"|bis\s+spätestens|spätestens|bis)\b\s*[:\-–]?\s*", re.IGNORECASE)

# Words parse_moment understands, by what people write. "sat", "sun" and "wed" are left out: they are words too.
_WORDS = {"today": "today", "heute": "today", "tomorrow": "tomorrow", "morgen": "tomorrow"} | {
    name: day for day, names in {
        "monday": "mon montag", "tuesday": "tue tues dienstag", "wednesday": "mittwoch",
        "thursday": "thu thur thurs donnerstag", "friday": "fri freitag", "saturday": "samstag sonnabend",
        "sunday": "sonntag"}.items() for name in [day, *names.split()]}
_MONTHS = {name: number for number, names in enumerate([
    "jan january januar jän jänner", "feb february februar", "mar march märz maerz mrz", "apr april", "may mai",
    "jun june juni", "jul july juli", "aug august", "sep sept september", "oct october okt oktober",
    "nov november", "dec december dez dezember"], start=1) for name in names.split()}


def _any(names: Iterable[str]) -> str:
    """A regex alternation of these names, longest first."""
    return "|".join(sorted(map(re.escape, names), key=len, reverse=True))


_WORD, _MONTH = _any(_WORDS), _any(_MONTHS)
_YEAR = r"20\d\d"  # never "1500 people"
_DATE = re.compile(rf"""
    (?:(?:the|on|am|zum|den)\s+)?
    (?:(?:{_WORD})\.?,?\s+(?:(?:the|den)\s+)?(?=\d|{_MONTH}))?  # "Friday, 4 December": the date wins
    (?:(?P<iso>\d{{4}}-\d{{2}}-\d{{2}}(?:t\d{{1,2}}:\d{{2}})?)
      |(?P<nd>\d{{1,2}})\.(?P<nm>\d{{1,2}})\.(?P<ny>{_YEAR}|\d\d)?  # German order: 4.12. is 4 December
      |(?P<d>\d{{1,2}})(?:st|nd|rd|th|\.)?\s*(?:of\s+)?(?P<m>{_MONTH})\.?(?:,?\s+(?P<y>{_YEAR}))?
      |(?P<m2>{_MONTH})\.?\s+(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(?P<y2>{_YEAR}))?
      |(?P<eow>eow|end\s+of\s+(?:the\s+)?week|ende\s+der\s+woche)
      |(?P<word>{_WORD})\.?
    )(?!\w)""", re.IGNORECASE | re.VERBOSE)
_BEFORE_TIME = re.compile(r"^[\s,]*(?:(?:at|um|@)\s*)?", re.IGNORECASE)  # "Friday at 15:00"


def requested_date(text: str, now: datetime, calendar: BusinessCalendar) -> datetime | None:
    """The date a requester asks for in a mail ("needed by Friday", "Due: 2026-12-04"), or None.

    Inside working hours, as every promised date: "by Saturday" is Friday's closing time.
    """
    today = now.astimezone(calendar.tz).date()
    unquoted = (line for line in text.splitlines() if not line.lstrip().startswith(">"))
    head = "\n".join(islice(unquoted, _MAX_LINES))[:_MAX_CHARS]
    for line in head.splitlines():  # a phrase and its date on one line: "by\nFriday's team" is no deadline
        for phrase in _PHRASE.finditer(line):
            found = _DATE.match(line, phrase.end())
            if found is None:
                continue
            try:  # the time, if any, follows the date: parse_moment reads it from the rest of the line
                rest = _BEFORE_TIME.sub("", line[found.end():])
                said = parse_moment(f"{_token(found, today)} {rest}", now, calendar)[0]
                return calendar.working_deadline(said, now)
            except ValueError:  # 2026-13-45, 31 February: numbers that are no date
                continue
    return None


def _token(found: re.Match[str], today: date) -> str:
    """The matched date as parse_moment reads it: an ISO day (maybe with a time) or a word like `friday`."""
    if found["iso"]:
        return found["iso"]
    if found["word"]:
        return _WORDS[found["word"].lower()]
    if found["eow"]:  # the coming Friday, or today on a Friday
        return (today + timedelta(days=(4 - today.weekday()) % 7)).isoformat()
    if found["nd"]:
        day, month, year = int(found["nd"]), int(found["nm"]), found["ny"]
    else:
        day, year = int(found["d"] or found["d2"]), found["y"] or found["y2"]
        month = _MONTHS[(found["m"] or found["m2"]).lower()]
    if year:
        return date(int(year) + (2000 if len(year) == 2 else 0), month, day).isoformat()
    wanted = date(today.year, month, day)  # no year: the next such day, today included
    return (wanted if wanted >= today else wanted.replace(year=today.year + 1)).isoformat()
