"""The date a requester asks for, read from the subject and body of a mail."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from inboxd.clock import BusinessCalendar
from inboxd.requested import requested_date

BERLIN = ZoneInfo("Europe/Berlin")
CAL = BusinessCalendar(BERLIN, country="DE")  # closes 17:30
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN)


def at(day: int, hour: int = 17, minute: int = 30, month: int = 11, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


FRIDAY, DEC_4 = at(27), at(4, month=12)


@pytest.mark.parametrize("text, expected", [
    # the phrases, English
    ("needed by Friday", FRIDAY),
    ("We need it by tomorrow, please.", at(24)),
    ("Could you do this? I need this by Thursday.", at(26)),
    ("need them by Dec 4th", DEC_4),
    ("Please have it ready by 2026-12-04", DEC_4),
    ("Due: 2026-12-04", DEC_4),
    ("due Friday", FRIDAY),
    ("due on December 4, 2026", DEC_4),
    ("Due date: 04.12.2026", DEC_4),
    ("Deadline: 4 December", DEC_4),
    ("deadline Wednesday", at(25)),
    ("no later than Thursday", at(26)),
    ("before 2026-12-01 if possible", at(1, month=12)),
    ("until end of the week", FRIDAY),
    ("DEADLINE: FRIDAY", FRIDAY),
    # the phrases, German
    ("Bitte bis Freitag erledigen", FRIDAY),
    ("bis spätestens 4.12.", DEC_4),
    ("Frist: 4. Dezember", DEC_4),
    ("benötigt bis morgen", at(24)),
    ("bis heute", at(23)),
    ("bis Mittwoch", at(25)),
    ("Frist: Donnerstag", at(26)),
    ("bis zum Ende der Woche", FRIDAY),
    # the date forms
    ("by today", at(23)),
    ("by Monday", at(30)),  # the next Monday: said on a Monday, a week later
    ("by Fri.", FRIDAY),
    ("by end of week", FRIDAY),
    ("by the end of the week", FRIDAY),
    ("by EOW", FRIDAY),
    ("by 4 Dec", DEC_4),
    ("by December 4", DEC_4),
    ("by the 4th of December", DEC_4),
    ("by 4 December 2027", at(3, month=12, year=2027)),  # a Saturday: Friday's closing, the same working time
    ("bis 4.12.26", DEC_4),
    ("by Friday, 4 December", DEC_4),  # a weekday before a full date: the date is what counts
    ("deadline: 4.12.2025", at(4, month=12, year=2025)),  # in the past, but asked for: the caller decides
    ("bis 1.11.", at(1, year=2027)),  # passed this year: next year
])
def test_requested_dates_people_write(text, expected):
    found = requested_date(f"Laptop for the new starter\n{text}", MONDAY, CAL)
    assert found == expected
    assert found.tzinfo == BERLIN


@pytest.mark.parametrize("text, expected", [
    ("Due: 2026-12-04 15:00", at(4, 15, 0, month=12)),
    ("needed by 2026-12-04T15:00", at(4, 15, 0, month=12)),
    ("due Friday at 11:45", at(27, 11, 45)),
    ("bis 4.12. um 9:00", at(4, 9, 0, month=12)),
])
def test_a_time_given_is_kept(text, expected):
    assert requested_date(text, MONDAY, CAL) == expected


@pytest.mark.parametrize("text", [
    "Laptop\nsent by John", "Laptop\nby the way, it's broken", "Laptop\nbefore lunch would be nice",
    "Laptop\nfor 5 people by 5", "Laptop\nby 5 people", "Laptop\nbefore 3 people arrive",
    "Laptop\nBye, see you Friday", "Laptop\nThanks! See you on Monday", "Laptop\nby May I ask why",
    "Laptop\ndue to the outage on Friday", "Laptop\nreduced by 4 decisions", "Laptop\ndeadline: soon",
    "Laptop\nDue: 2026-13-45", "Laptop\nneeded by 31 February", "Laptop\nmeeting on 4 December", "",
])
def test_no_date_is_read_into_ordinary_words(text):
    assert requested_date(text, MONDAY, CAL) is None


def test_a_day_month_already_passed_means_next_year():
    december = datetime(2026, 12, 20, 10, 0, tzinfo=BERLIN)
    assert requested_date("Laptop\nneeded by 5 January", december, CAL) == at(5, month=1, year=2027)
    # Today counts; a Sunday, with no working time left before it, so Monday's opening.
    assert requested_date("Laptop\nneeded by 20 December", december, CAL) == at(21, 9, 0, month=12)


def test_end_of_week_on_a_friday_is_today():
    assert requested_date("by EOW", at(27, 9, 0), CAL) == FRIDAY


def test_days_are_counted_and_returned_in_the_team_timezone():
    late_monday_utc = datetime(2026, 11, 23, 23, 30, tzinfo=timezone.utc)  # already Tuesday in Berlin
    found = requested_date("Laptop\nneeded by today", late_monday_utc, CAL)
    assert found == at(24) == datetime(2026, 11, 24, 16, 30, tzinfo=timezone.utc)
    assert found.tzinfo == BERLIN


def test_quoted_lines_are_ignored():
    assert requested_date("Re: Laptop\n> needed by Friday\nThanks, all sorted.", MONDAY, CAL) is None
    assert requested_date("Re: Laptop\n  > needed by Friday\nDue: 2026-12-04", MONDAY, CAL) == DEC_4


@pytest.mark.parametrize("text, expected", [
    ("Laptop\nneeded by Friday, due 2026-12-04 at the latest", FRIDAY),
    ("Laptop\nDue: 2026-12-04\nor by Friday if you can", DEC_4),
    ("by tomorrow\nDeadline: Friday", at(24)),  # the subject comes first
    ("Laptop\nby the way, due Thursday", at(26)),  # a "by" without a date does not stop the search
])
def test_the_first_date_wins(text, expected):
    assert requested_date(text, MONDAY, CAL) == expected


def test_only_the_head_of_a_long_mail_is_read():
    assert requested_date("Laptop\n" + "blah\n" * 45 + "needed by Friday", MONDAY, CAL) is None
    assert requested_date("Laptop\n" + "blah " * 900 + "needed by Friday", MONDAY, CAL) is None
    assert requested_date("Laptop\n" + "> old\n" * 45 + "needed by Friday", MONDAY, CAL) == FRIDAY
