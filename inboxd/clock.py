"""Time: the injected Clock, durations, and the team's business calendar."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import holidays as holidays_lib


class Clock(Protocol):
    """Where every time inboxd reads comes from."""

    def now(self) -> datetime:
        """The current moment, timezone-aware."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """The current moment in UTC."""
        return datetime.now(UTC)


@dataclass
class FixedClock:
    """A clock that only moves when told to; for tests and `sweep --at`."""

    moment: datetime

    def now(self) -> datetime:
        """The moment this clock is set to."""
        return self.moment

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward."""
        self.moment += delta


_UNITS = {"m": "minutes", "min": "minutes", "minute": "minutes", "minutes": "minutes",
          "h": "hours", "hour": "hours", "hours": "hours",
          "d": "days", "day": "days", "days": "days",
          "w": "weeks", "week": "weeks", "weeks": "weeks"}
_DURATION = re.compile(r"^\s*(\d+)\s*(business\s+)?([a-z]+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Duration:
    """An amount of time, either on the wall clock or in business time."""

    amount: int
    unit: str  # minutes | hours | days | weeks
    business: bool = False

    def __str__(self) -> str:
        kind = "business " if self.business else ""
        return f"{self.amount} {kind}{self.unit.removesuffix('s') if self.amount == 1 else self.unit}"


def parse_duration(text: str) -> Duration:
    """Parse `30m`, `4h`, `2d`, `1w`, `3 business days`, `4 business hours`."""
    match = _DURATION.match(str(text))
    unit = _UNITS.get(match.group(3).lower()) if match else None
    if not match or not unit:
        raise ValueError(f"not a duration: {text!r} (try 30m, 4h, 2d, 1w, "
                         f"\"3 business days\", \"4 business hours\")")
    business = bool(match.group(2))
    if business and unit not in ("hours", "days"):
        raise ValueError(f"business durations are in hours or days, not {unit}: {text!r}")
    return Duration(int(match.group(1)), unit, business)


_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def parse_workdays(text: str) -> frozenset[int]:
    """Parse `mon-fri` or `mon,tue,thu` into weekday numbers (Monday = 0)."""
    days: set[int] = set()
    for part in str(text).lower().replace(" ", "").split(","):
        ends = part.split("-")
        if not all(end in _WEEKDAYS for end in ends) or len(ends) > 2:
            raise ValueError(f"not a list of weekdays: {text!r} (try \"mon-fri\")")
        first, last = _WEEKDAYS.index(ends[0]), _WEEKDAYS.index(ends[-1])
        days.update(range(first, last + 1) if first <= last else [*range(first, 7), *range(last + 1)])
    return frozenset(days)


def parse_hours(text: str) -> tuple[time, time]:
    """Parse `09:00-17:30` into opening and closing times."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", str(text))
    if not match:
        raise ValueError(f"not working hours: {text!r} (try \"09:00-17:30\")")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if not (h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60) or (h1, m1) >= (h2, m2):
        raise ValueError(f"opening must come before closing: {text!r}")
    return time(h1, m1), time(h2, m2)


@dataclass(frozen=True)
class BusinessCalendar:
    """Working days and hours in the team's timezone, minus public and extra holidays."""

    tz: ZoneInfo
    workdays: frozenset[int] = frozenset(range(5))
    opens: time = time(9, 0)
    closes: time = time(17, 30)
    country: str | None = None
    extra_holidays: frozenset[date] = frozenset()
    _public: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def day_minutes(self) -> int:
        """The business minutes of one working day."""
        return (self.closes.hour * 60 + self.closes.minute) - (self.opens.hour * 60 + self.opens.minute)

    def is_workday(self, day: date) -> bool:
        """True when the team works on this date."""
        return day.weekday() in self.workdays and day not in self.extra_holidays \
            and not self._is_public_holiday(day)

    def _is_public_holiday(self, day: date) -> bool:
        if not self.country:
            return False
        if day.year not in self._public:
            country, _, region = self.country.partition("-")
            self._public[day.year] = holidays_lib.country_holidays(
                country, subdiv=region or None, years=day.year)
        return day in self._public[day.year]

    def _at(self, day: date, moment: time) -> datetime:
        return datetime.combine(day, moment, self.tz)

    def _next_open(self, moment: datetime) -> datetime:
        """The first working moment at or after `moment`."""
        local = moment.astimezone(self.tz)
        day = local.date()
        if self.is_workday(day) and local.time() < self.closes:
            return max(local, self._at(day, self.opens))
        for _ in range(3660):
            day += timedelta(days=1)
            if self.is_workday(day):
                return self._at(day, self.opens)
        raise ValueError("the calendar has no working day in ten years")

    def add(self, start: datetime, duration: Duration) -> datetime:
        """The moment `duration` after `start`, counting only business time if it says so."""
        if not duration.business:
            if duration.unit in ("days", "weeks"):
                local = start.astimezone(self.tz).replace(tzinfo=None)
                days = duration.amount * (7 if duration.unit == "weeks" else 1)
                return (local + timedelta(days=days)).replace(tzinfo=self.tz)
            return start + timedelta(**{duration.unit: duration.amount})
        if duration.unit in ("hours", "minutes"):
            return self._add_working_minutes(start, duration.amount * (60 if duration.unit == "hours" else 1))
        return self._add_working_days(start, duration.amount)

    def working_deadline(self, moment: datetime, now: datetime) -> datetime:
        """A promised moment inside working hours, leaving the same working time before it.

        Outside hours it moves back to the last working moment before it (Saturday: Friday's
        closing; 20:00: that day's closing), or, when that has passed, on to the next opening.
        """
        if moment <= now:
            return moment  # the caller says it is in the past
        last = self._last_working(moment)
        return last if last > now else self._next_open(moment)

    def _add_working_minutes(self, start: datetime, minutes: int) -> datetime:
        current = self._next_open(start)
        remaining = timedelta(minutes=minutes)
        while True:
            closing = self._at(current.date(), self.closes)
            available = closing.replace(tzinfo=None) - current.replace(tzinfo=None)
            if remaining <= available:
                return (current.replace(tzinfo=None) + remaining).replace(tzinfo=self.tz)
            remaining -= available
            current = self._next_open(closing)

    def before(self, moment: datetime, duration: Duration) -> datetime:
        """The latest start from which `duration` has run out by `moment`: `add(before(m, d), d) <= m`.

        Jobs ask the database for rows older than this, so "every 3 business days" is one indexed range.
        """
        if not duration.business:
            if duration.unit in ("days", "weeks"):
                local = moment.astimezone(self.tz).replace(tzinfo=None)
                days = duration.amount * (7 if duration.unit == "weeks" else 1)
                return (local - timedelta(days=days)).replace(tzinfo=self.tz)
            return moment - timedelta(**{duration.unit: duration.amount})
        current = self._last_working(moment)
        if duration.unit == "days":
            if current.time() >= self.closes:  # a start at closing time counts from the next opening
                current -= timedelta(microseconds=1)
            day = current.date()
            for _ in range(duration.amount):
                day -= timedelta(days=1)
                while not self.is_workday(day):
                    day -= timedelta(days=1)
            return self._at(day, current.time())
        remaining = timedelta(minutes=duration.amount * 60)
        while True:
            opening = self._at(current.date(), self.opens)
            available = current.replace(tzinfo=None) - opening.replace(tzinfo=None)
            if remaining <= available:
                return (current.replace(tzinfo=None) - remaining).replace(tzinfo=self.tz)
            remaining -= available
            current = self._last_working(opening - timedelta(microseconds=1))

    def _last_working(self, moment: datetime) -> datetime:
        """The latest working moment at or before `moment` (a closing time when it falls outside hours)."""
        local = moment.astimezone(self.tz)
        day = local.date()
        if self.is_workday(day) and local.time() >= self.opens:
            return min(local, self._at(day, self.closes))
        for _ in range(3660):
            day -= timedelta(days=1)
            if self.is_workday(day):
                return self._at(day, self.closes)
        raise ValueError("the calendar has no working day in ten years")

    def working_minutes(self, start: datetime, end: datetime) -> int:
        """Whole business minutes between two moments: how long a paused item's clock stood still."""
        total, day = timedelta(), start.astimezone(self.tz).date()
        last = end.astimezone(self.tz).date()
        while day <= last:
            if self.is_workday(day):
                opens, closes = self._at(day, self.opens), self._at(day, self.closes)
                overlap = min(closes, end) - max(opens, start)
                total += max(overlap, timedelta())
            day += timedelta(days=1)
        return int(total.total_seconds() // 60)

    def extend(self, moment: datetime, minutes: int) -> datetime:
        """`moment` pushed back by this many business minutes (a paused clock's date, when it runs again)."""
        return self._add_working_minutes(moment, minutes) if minutes > 0 else moment

    def _add_working_days(self, start: datetime, days: int) -> datetime:
        current = self._next_open(start)
        day = current.date()
        for _ in range(days):
            day += timedelta(days=1)
            while not self.is_workday(day):
                day += timedelta(days=1)
        return self._at(day, current.time())


@dataclass(frozen=True)
class Weekly:
    """A moment each week (`mon 08:00`) in the team's timezone: when the digest goes out."""

    weekday: int
    at: time

    def last(self, moment: datetime, tz: ZoneInfo) -> datetime:
        """The latest such moment at or before `moment`."""
        local = moment.astimezone(tz)
        day = local.date() - timedelta(days=(local.weekday() - self.weekday) % 7)
        slot = datetime.combine(day, self.at, tz)
        return slot if slot <= moment else datetime.combine(day - timedelta(days=7), self.at, tz)

    def __str__(self) -> str:
        return f"{_WEEKDAYS[self.weekday]} {self.at:%H:%M}"


def parse_weekly(text: str) -> Weekly:
    """Parse `mon 08:00` (a weekday and a time)."""
    match = re.fullmatch(r"\s*([a-z]+)\s+(\d{1,2}):(\d{2})\s*", str(text).lower())
    day = _DAY_NAMES.get(match.group(1)) if match else None
    if not match or day is None or int(match.group(2)) > 23 or int(match.group(3)) > 59:
        raise ValueError(f"not a weekday and time: {text!r} (try \"mon 08:00\", or false for none)")
    return Weekly(day, time(int(match.group(2)), int(match.group(3))))


_DAY_NAMES = {name: i for i, names in enumerate(
    [("mon", "monday"), ("tue", "tues", "tuesday"), ("wed", "wednesday"), ("thu", "thur", "thurs", "thursday"),
     ("fri", "friday"), ("sat", "saturday"), ("sun", "sunday")]) for name in names}
_RELATIVE = re.compile(r"\+(\d+)(m|h|d|w)", re.IGNORECASE)
_CLOCK_TIME = re.compile(r"(\d{1,2}):(\d{2})")


_MOST_AHEAD = {"days": 750, "hours": 750 * 24, "minutes": 750 * 24 * 60}  # about three years of working time


def parse_moment(text: str, now: datetime, calendar: BusinessCalendar) -> tuple[datetime, str]:
    """A date an owner writes (`2026-12-04 [15:00]`, `friday`, `today`, `tomorrow`, `+2d`, `+4h`) and the rest.

    A day without a time means the end of that working day, in the team's timezone. `+` counts
    business time, as a rule's `due_in` does: `+2d` is two working days on, `+1w` a working week
    (as many working days as the team works in a week), `+4h` and `+30m` working time.
    """
    first, _, rest = text.strip().partition(" ")
    word, local = first.lower(), now.astimezone(calendar.tz)
    relative = _RELATIVE.fullmatch(word)
    if relative:
        amount, unit = int(relative.group(1)), _UNITS[relative.group(2).lower()]
        if unit == "weeks":
            amount, unit = amount * len(calendar.workdays), "days"
        if amount > _MOST_AHEAD[unit]:  # counted day by day: a typo of nine digits must not stall the intake
            raise ValueError(f"{first!r} is too far ahead: at most {_MOST_AHEAD['days']} working days")
        return calendar.add(now, Duration(amount, unit, business=True)), rest.strip()
    if word == "today":
        day = local.date()
    elif word == "tomorrow":
        day = local.date() + timedelta(days=1)
    elif word in _DAY_NAMES:  # the next one: "monday" said on a Monday means a week later ("today" is today)
        day = local.date() + timedelta(days=(_DAY_NAMES[word] - local.weekday() - 1) % 7 + 1)
    else:
        date_part, _, clock_part = word.partition("t")
        try:
            day = date.fromisoformat(date_part)
        except ValueError:
            raise ValueError(f"{first!r} is not a date; write 2026-12-04, friday, today, tomorrow, "
                             f"+2d or +4h") from None
        if clock_part:
            rest = f"{clock_part} {rest}"
    if day > local.date() + timedelta(days=_MOST_AHEAD["days"] * 7 // 5):
        raise ValueError(f"{first!r} is too far ahead: at most {_MOST_AHEAD['days']} working days")
    at, rest = calendar.closes, rest.strip()
    clock_time = _CLOCK_TIME.match(rest)
    if clock_time and int(clock_time.group(1)) < 24 and int(clock_time.group(2)) < 60:
        at, rest = time(int(clock_time.group(1)), int(clock_time.group(2))), rest[clock_time.end():].strip()
    return datetime.combine(day, at, calendar.tz), rest
