"""Promised dates an owner sets by mail (issue "never loop, never stall, never drop", item 8), on Dovecot.

`#eta +5d` said at Monday 04:08 promised Saturday 04:08, `#eta +1w` Monday 04:06: relative dates
are business time, as `due_in` is, and every promised date lies inside working hours.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from conversation_helpers import reply, text_of
from test_security import OWNER, REQUESTER, Mailroom

BERLIN = ZoneInfo("Europe/Berlin")


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


@pytest.fixture
def room(tmp_path, mailbox, smtp_capture) -> Mailroom:
    room = Mailroom(tmp_path, mailbox, smtp_capture)
    room.request()  # Rosa's request, taken by Ana; promised for Thursday 26 November, 10:00
    return room


def eta(room: Mailroom, when: datetime, command: str) -> list:
    """Ana says `command` at `when`; the mails it caused."""
    room.clock.moment = when
    about_the_item = next(m for m in reversed(room.sent) if m["To"] == OWNER and "[IT-1]" in m["Subject"])
    return room.run(reply(about_the_item, OWNER, command))


def test_plus_days_and_weeks_are_working_days_from_the_next_opening(room):
    sent = eta(room, at(2026, 11, 30, 4, 8), "#eta +5d waiting for the new screen")
    assert room.item.due_at == at(2026, 12, 7, 9, 0)  # not Saturday 04:08
    told = next(m for m in sent if m["To"] == REQUESTER)  # a later date: Rosa is told at once
    assert "Monday 7 December 2026, 09:00" in text_of(told)
    eta(room, at(2026, 11, 30, 4, 6), "#eta +1w")
    assert room.item.due_at == at(2026, 12, 7, 9, 0)  # not Monday 04:06


def test_plus_hours_count_working_hours(room):
    eta(room, at(2026, 12, 4, 16, 0), "#eta +3h")
    assert room.item.due_at == at(2026, 12, 7, 10, 30)  # Friday 16:00-17:30, then Monday 09:00-10:30


def test_a_date_outside_working_hours_is_moved_inside_them(room):
    eta(room, at(2026, 12, 2, 10, 0), "#eta saturday")
    assert room.item.due_at == at(2026, 12, 4, 17, 30)  # Friday's closing: the same working time
    eta(room, at(2026, 12, 2, 10, 0), "#eta 2026-12-03 21:00")
    assert room.item.due_at == at(2026, 12, 3, 17, 30)
    eta(room, at(2026, 12, 4, 18, 0), "#eta tomorrow")  # no working time left before it: Monday's opening
    assert room.item.due_at == at(2026, 12, 7, 9, 0)

