"""Durations and the business calendar."""

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from inboxd.clock import BusinessCalendar, parse_duration, parse_hours, parse_moment, parse_workdays

BERLIN = ZoneInfo("Europe/Berlin")
CAL = BusinessCalendar(BERLIN, country="DE", extra_holidays=frozenset({date(2026, 12, 24)}))


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


@pytest.mark.parametrize("text, amount, unit, business", [
    ("30m", 30, "minutes", False), ("4h", 4, "hours", False), ("2d", 2, "days", False),
    ("1w", 1, "weeks", False), ("3 business days", 3, "days", True),
    ("4 business hours", 4, "hours", True), ("1 business day", 1, "days", True)])
def test_parse_duration(text, amount, unit, business):
    duration = parse_duration(text)
    assert (duration.amount, duration.unit, duration.business) == (amount, unit, business)


@pytest.mark.parametrize("text", ["soon", "3 business weeks", "-2d", "4 parsecs", ""])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_friday_afternoon_plus_four_business_hours_is_monday_midday():
    # 45 minutes left on Friday (until 17:30), 3h15 on Monday from 09:00
    assert CAL.add(at(2026, 11, 27, 16, 45), parse_duration("4 business hours")) == at(2026, 11, 30, 12, 15)


def test_business_days_skip_weekend_and_holidays():
    # Wed 23 Dec + 2 business days: 24th (extra), 25th, 26th (public), weekend -> Tue 29th
    assert CAL.add(at(2026, 12, 23, 11, 0), parse_duration("2 business days")) == at(2026, 12, 29, 11, 0)


def test_outside_hours_starts_at_next_opening():
    assert CAL.add(at(2026, 11, 28, 12, 0), parse_duration("1 business hour")) == at(2026, 11, 30, 10, 0)
    assert CAL.add(at(2026, 11, 30, 7, 0), parse_duration("1 business hour")) == at(2026, 11, 30, 10, 0)


def test_dst_change_keeps_local_business_hours():
    # Clocks go back on Sunday 25 Oct 2026: Monday 09:00 is UTC+1, Friday was UTC+2
    due = CAL.add(at(2026, 10, 23, 16, 30), parse_duration("4 business hours"))
    assert due == at(2026, 10, 26, 12, 0)
    assert due.utcoffset().total_seconds() == 3600
    assert CAL.add(at(2026, 10, 24, 12, 0), parse_duration("1d")).hour == 12  # wall-clock day


def test_region_holidays():
    bavaria = BusinessCalendar(BERLIN, country="DE-BY")
    assert not bavaria.is_workday(date(2026, 1, 6))  # Epiphany in Bavaria
    assert CAL.is_workday(date(2026, 1, 6))


def test_workdays_and_hours_parsing():
    assert parse_workdays("mon-fri") == frozenset(range(5))
    assert parse_workdays("sun-tue") == frozenset({6, 0, 1})
    assert parse_hours("08:30-16:00")[0].hour == 8
    for bad in ("mon-funday", "17:00-09:00"):
        with pytest.raises(ValueError):
            parse_workdays(bad) if "-f" in bad else parse_hours(bad)


class TestParseMoment:
    """Dates owners write after #eta, read in the team's timezone; a day alone means its closing time."""

    cal = BusinessCalendar(ZoneInfo("Europe/Berlin"), country="DE")
    monday_10 = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))

    @pytest.mark.parametrize("text, expected, rest", [
        ("2026-12-04", datetime(2026, 12, 4, 17, 30), ""),
        ("2026-12-04 15:00 parts are late", datetime(2026, 12, 4, 15, 0), "parts are late"),
        ("2026-12-04T08:15", datetime(2026, 12, 4, 8, 15), ""),
        ("friday waiting for the vendor", datetime(2026, 11, 27, 17, 30), "waiting for the vendor"),
        ("Mon", datetime(2026, 11, 30, 17, 30), ""),
        ("today", datetime(2026, 11, 23, 17, 30), ""),
        ("tomorrow 9:30", datetime(2026, 11, 24, 9, 30), ""),
        ("+2d", datetime(2026, 11, 25, 10, 0), ""),
        ("+4h so there", datetime(2026, 11, 23, 14, 0), "so there"),
    ])
    def test_forms(self, text, expected, rest):
        assert parse_moment(text, self.monday_10, self.cal) == (expected.replace(tzinfo=BERLIN), rest)

    def test_a_weekday_said_on_that_day_means_next_week(self):
        assert parse_moment("monday", self.monday_10, self.cal)[0].day == 30
        assert parse_moment("sunday", self.monday_10, self.cal)[0].day == 29

    def test_the_team_timezone_decides_the_day(self):
        late_utc = datetime(2026, 11, 23, 23, 30, tzinfo=timezone.utc)  # already Tuesday in Berlin
        assert parse_moment("today", late_utc, self.cal)[0].date().isoformat() == "2026-11-24"

    @pytest.mark.parametrize("text", ["someday", "2026-02-30", "+2x", "next week"])
    def test_unreadable_dates_are_refused_with_examples(self, text):
        with pytest.raises(ValueError, match="is not a date; write 2026-12-04, friday"):
            parse_moment(text, self.monday_10, self.cal)


@pytest.mark.parametrize("duration", ["4 business hours", "1 business hour", "3 business days", "1 business day",
                                      "2d", "30m", "1w"])
def test_before_is_the_latest_start_from_which_a_duration_has_run_out(duration):
    import random
    from datetime import timedelta
    d, rng = parse_duration(duration), random.Random(duration)
    for _ in range(400):  # weekends, nights, the DST change of 25 Oct, Christmas
        now = at(2026, 10, 20, 0, 0) + timedelta(minutes=rng.randrange(60 * 24 * 75))
        start = CAL.before(now, d)
        assert CAL.add(start, d) <= now
        assert CAL.add(start + timedelta(minutes=1), d) > now  # and no later start would do


def test_working_minutes_and_extend_count_only_business_time():
    friday, monday = at(2026, 11, 27, 16, 45), at(2026, 11, 30, 12, 15)
    assert CAL.working_minutes(friday, monday) == 4 * 60
    assert CAL.extend(friday, 4 * 60) == monday
    assert CAL.working_minutes(at(2026, 12, 23, 17, 0), at(2026, 12, 28, 9, 30)) == 30 + 30  # 24th-27th closed


class TestRelativeDatesAreBusinessTime:
    """`#eta +5d` said at Monday 04:08 once promised Saturday 04:08: `+` counts business time, as `due_in` does."""

    monday_0408, friday_16 = at(2026, 11, 30, 4, 8), at(2026, 12, 4, 16, 0)

    @pytest.mark.parametrize("text, expected", [
        ("+5d", at(2026, 12, 7, 9, 0)),  # five working days from Monday's opening
        ("+1w", at(2026, 12, 7, 9, 0)),  # a working week: five working days
        ("+2w", at(2026, 12, 14, 9, 0)),
        ("+3h", at(2026, 11, 30, 12, 0)),
        ("+30m", at(2026, 11, 30, 9, 30)),
    ])
    def test_from_before_opening(self, text, expected):
        assert parse_moment(text, self.monday_0408, CAL)[0] == expected

    @pytest.mark.parametrize("text, expected", [
        ("+1d", at(2026, 12, 7, 16, 0)),
        ("+3h", at(2026, 12, 7, 10, 30)),  # 1.5 hours on Friday, 1.5 on Monday
        ("+1w", at(2026, 12, 11, 16, 0)),
        ("+90m", at(2026, 12, 4, 17, 30)),  # closing time is still the working day
    ])
    def test_from_friday_afternoon(self, text, expected):
        assert parse_moment(text, self.friday_16, CAL)[0] == expected

    def test_a_week_is_as_many_days_as_the_team_works(self):
        three_days = BusinessCalendar(BERLIN, workdays=frozenset({0, 1, 3}))  # mon, tue, thu
        assert parse_moment("+1w", self.monday_0408, three_days)[0] == at(2026, 12, 7, 9, 0)

    def test_holidays_are_skipped(self):
        assert parse_moment("+1d", at(2026, 12, 23, 12, 0), CAL)[0] == at(2026, 12, 28, 12, 0)  # 24-26 closed


class TestWorkingDeadline:
    """Every promised date lies inside working hours, with the same working time before it."""

    wednesday = at(2026, 12, 2, 10, 0)

    @pytest.mark.parametrize("said, promised", [
        (at(2026, 12, 3, 11, 0), at(2026, 12, 3, 11, 0)),  # inside hours: as said
        (at(2026, 12, 5, 17, 30), at(2026, 12, 4, 17, 30)),  # Saturday: Friday's closing
        (at(2026, 12, 3, 20, 0), at(2026, 12, 3, 17, 30)),  # after closing: that day's closing
        (at(2026, 12, 4, 7, 0), at(2026, 12, 3, 17, 30)),  # before opening: the day before's closing
        (at(2026, 12, 25, 17, 30), at(2026, 12, 23, 17, 30)),  # Christmas, and the 24th closed too
    ])
    def test_moved_back_to_the_last_working_moment(self, said, promised):
        assert CAL.working_deadline(said, self.wednesday) == promised

    def test_with_no_working_time_left_before_it_the_next_opening(self):
        friday_evening = at(2026, 12, 4, 18, 0)
        assert CAL.working_deadline(at(2026, 12, 5, 17, 30), friday_evening) == at(2026, 12, 7, 9, 0)

    def test_a_moment_in_the_past_is_left_for_the_caller_to_refuse(self):
        assert CAL.working_deadline(at(2026, 12, 1, 12, 0), self.wednesday) == at(2026, 12, 1, 12, 0)


def test_a_date_years_ahead_is_refused_at_once_not_counted_out():
    cal = BusinessCalendar(ZoneInfo("Europe/Berlin"))
    now = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("UTC"))
    for far in ("+9999999999h", "+3000000d", "+600000w", "+751d", "9999-12-31"):
        with pytest.raises(ValueError, match="too far ahead"):
            parse_moment(far, now, cal)
    assert parse_moment("+750d", now, cal)[0].year == 2029
