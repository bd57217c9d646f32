"""The team's promises: the promised date, the paused clock, and when each job is due (decided purely)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .clock import BusinessCalendar, Duration
from .domain import OPEN_STATUSES, Status
from .settings import ServiceConfig
from .wording import local_time

AT_RISK_WITHIN = Duration(1, "days", business=True)  # the digest's "at risk": due by the end of the next workday
SILENCE_GRACE = timedelta(hours=1)  # a status update due goes out at the next sweep: every minute, or hourly by cron


def promised_date(calendar: BusinessCalendar, service: ServiceConfig, created: datetime,
                  due_in: Duration | None, requested: datetime | None) -> datetime:
    """The date an item is promised for: the rule's (or the default) turnaround, or the requester's later date.

    A requested date sooner than the team's turnaround cannot be promised; the ack says which date can.
    Always inside working hours: a wall-clock `due_in` landing on a Sunday is moved to Friday's closing.
    """
    standard = calendar.working_deadline(calendar.add(created, due_in or service.default_due), created)
    return requested if requested is not None and requested > standard else standard


def paused(status: str, waiting_on: str | None) -> bool:
    """An item waiting on its requester: the date's clock stands still, and no job runs for it.

    `queries.not_paused` is the same rule in SQL, for the jobs' and the digest's queries.
    """
    return status == Status.WAITING and waiting_on in (None, "requester")


def clock_changes(before: Mapping[str, Any], changes: Mapping[str, Any], now: datetime,
                  calendar: BusinessCalendar) -> tuple[dict[str, Any], str | None]:
    """The pause or restart a status change means for the date, and a line for the history.

    `before` holds the item's status, waiting_on, due_at and paused_at. When the wait on the
    requester ends, the date moves by the business time the clock stood still, unless the same
    mail set a new date itself (#eta).
    """
    after = {**before, **changes}
    was, now_paused = before["paused_at"] is not None, paused(after["status"], after["waiting_on"])
    if now_paused and not was:
        return {"paused_at": now}, "the date's clock is paused while we wait on the requester"
    if was and not now_paused:
        if "due_at" in changes or before["due_at"] is None or after["status"] not in OPEN_STATUSES:
            return {"paused_at": None}, None  # a new date was set, or the item closed: nothing to move
        if before["due_at"] <= before["paused_at"]:
            return {"paused_at": None}, "the date's clock runs again; the date had passed before the wait, so it stays"
        stood = calendar.working_minutes(before["paused_at"], now)
        due = date_in_force(before["due_at"], before["paused_at"], now, calendar)
        hours, minutes = divmod(stood, 60)
        return ({"paused_at": None, "due_at": due},
                f"the date's clock runs again: paused {hours}h{minutes:02d} of business time, so the date "
                f"moves to {local_time(due, calendar.tz)}")
    return {}, None


def date_in_force(due: datetime, paused_at: datetime | None, now: datetime, calendar: BusinessCalendar) -> datetime:
    """The promised date as it stands at `now`: while the clock is paused it moves on with the pause.

    A date that had passed when the wait began stays where it is: no pause gives back a missed date.
    """
    if paused_at is None or due <= paused_at:
        return due
    return calendar.extend(due, calendar.working_minutes(paused_at, now))


@dataclass(frozen=True)
class Cutoffs:
    """As of one moment, the bounds each job's query compares stored dates with."""

    now: datetime
    remind: datetime  # owner reminder: items due at or before this
    notify: datetime  # requester notice: items due at or before this
    update: datetime  # status update: items whose requester last heard from us at or before this
    at_risk: datetime  # digest: open items due at or before this

    @classmethod
    def at(cls, now: datetime, calendar: BusinessCalendar, service: ServiceConfig) -> Cutoffs:
        """The cutoffs as of `now`: one calendar sum each, so every job is one indexed range query."""
        return cls(now, calendar.add(now, service.remind_owner_before),
                   calendar.add(now, service.notify_requester_before),
                   calendar.before(now, service.update_every), calendar.add(now, AT_RISK_WITHIN))
