"""The date a requester asks for in a request ("needed by Friday", "Due: 2026-12-04"), read conservatively."""

from __future__ import annotations

import re
from datetime import date, datetime, time

from dateutil import parser as dateparser

from .clock import BusinessCalendar, parse_moment

# A phrase that introduces a deadline; a date must follow it directly.
_PHRASE = re.compile(
    r"\b(?:needed\s+by|need(?:ed)?\s+(?:it|this|them|that)\s+by|due(?:\s+date)?\s*:?|deadline\s*:?|"
    r"no\s+later\s+than|by|before|until|bis(?:\s+spätestens)?|frist\s*:?|benötigt\s+bis)\s+",
    re.IGNORECASE)
_GERMAN_DAYS = {"montag": "monday", "dienstag": "tuesday", "mittwoch": "wednesday", "donnerstag": "thursday",
                "freitag": "friday", "heute": "today", "morgen": "tomorrow"}
_GERMAN_MONTHS = {"januar": "january", "jänner": "january", "februar": "february", "märz": "march",
                  "mai": "may", "juni": "june", "juli": "july", "oktober": "october", "dezember": "december"}
_MONTH = (r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*|januar|jänner|februar|märz|mai|juni|"
          r"juli|oktober|dezember")
_WORDS = r"monday|tuesday|wednesday|thursday|friday|today|tomorrow|" + "|".join(_GERMAN_DAYS)
_DATE = re.compile(
    rf"(?P<iso>\d{{4}}-\d{{2}}-\d{{2}}(?:[ T]\d{{1,2}}:\d{{2}})?)"
    rf"|(?P<eow>end\s+of\s+(?:the\s+)?week|eow)\b"
    rf"|(?P<word>{_WORDS})\b"
    rf"|(?P<dm>\d{{1,2}})(?:st|nd|rd|th|\.)?\s+(?P<dm_month>{_MONTH})\b\.?(?:\s+(?P<dm_year>\d{{4}}))?"
    rf"|(?P<md_month>{_MONTH})\b\.?\s+(?P<md>\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(?P<md_year>\d{{4}}))?"
    rf"|(?P<num_d>\d{{1,2}})\.(?P<num_m>\d{{1,2}})\.(?P<num_y>\d{{4}})?",
    re.IGNORECASE)
_LOOK_AT = 4000  # characters: a deadline is stated early, not in a forwarded thread below


def requested_date(text: str, now: datetime, calendar: BusinessCalendar) -> datetime | None:
    """The date a mail asks for, at the end of that working day (or at the time given), or None."""
    lines = [line for line in text[:_LOOK_AT].splitlines() if not line.lstrip().startswith(">")]
    for phrase in _PHRASE.finditer("\n".join(lines)):
        found = _DATE.match(phrase.string, phrase.end())
        if found is not None:
            day = _read(found, now, calendar)
            if day is not None:
                return day
    return None


def _read(found: re.Match, now: datetime, calendar: BusinessCalendar) -> datetime | None:
    """The moment one matched date means, in the team's timezone."""
    today = now.astimezone(calendar.tz).date()
    closing = calendar.closes
    if found["iso"] or found["word"]:
        word = (found["iso"] or found["word"]).lower().replace(" ", "T", 1)
        return parse_moment(_GERMAN_DAYS.get(word, word), now, calendar)[0]
    if found["eow"]:
        friday = today.toordinal() + (4 - today.weekday()) % 7
        return datetime.combine(date.fromordinal(friday), closing, calendar.tz)
    if found["num_d"]:
        day, month, year = int(found["num_d"]), int(found["num_m"]), found["num_y"]
    else:
        month_name = (found["dm_month"] or found["md_month"]).lower()
        try:
            month = dateparser.parse(_GERMAN_MONTHS.get(month_name, month_name)).month
        except (ValueError, OverflowError):
            return None
        day, year = int(found["dm"] or found["md"]), found["dm_year"] or found["md_year"]
    try:
        wanted = date(int(year), month, day) if year else date(today.year, month, day)
        if not year and wanted < today:
            wanted = date(today.year + 1, month, day)
    except ValueError:
        return None
    return datetime.combine(wanted, time(closing.hour, closing.minute), calendar.tz)
