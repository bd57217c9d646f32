"""The team's figures over a period, asked of the database in SQL: `inboxd stats`, the report and the digest.

Each figure is defined once, here (docs/stats.md says what each one means). Items are counted in
the period by the moment that matters for the figure: requests and first responses by when the
item was created, done and ratings by when it was resolved, date moves by when they were made,
missed dates by the date itself. Times are business time unless named wall-clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import peewee as pw

from .clock import Duration
from .domain import OPEN_STATUSES, Status
from .models import DateMove, Event, Item, Message, Notice, Outbox, db
from .promises import AT_RISK_WITHIN
from .queries import not_paused
from .settings import Config

ACK_WITHIN_SECONDS = 60  # "acknowledged within a minute": the promise to the requester
SILENCE_GRACE = timedelta(hours=1)  # a status update due goes out at the next sweep: every minute, or hourly by cron
LISTED = 25  # late and at-risk items named; the counts are always whole
FIRST_RESPONSE_BUCKETS = (("≤ 15 min", 15), ("≤ 1 h", 60), ("≤ 4 h", 240))  # then ≤ 1 and ≤ 3 business days, more
OPEN_AGES = (("< 1 day", 1), ("1–3 days", 3), ("3–7 days", 7), ("1–4 weeks", 28))  # then "4 weeks or more"
BREAKDOWNS = ("week", "month", "queue", "owner")
UNOWNED = ""  # Scope.owner for items nobody owns


@dataclass(frozen=True)
class Scope:
    """The period [since, until) and, optionally, one queue or one owner (UNOWNED: items nobody owns)."""

    since: datetime
    until: datetime
    queue: str | None = None
    owner: str | None = None

    def items(self) -> pw.Expression:
        """The items of this queue and owner, whatever their dates."""
        condition = Item.id.is_null(False)
        if self.queue is not None:
            condition &= Item.queue == self.queue
        if self.owner is not None:
            condition &= Item.owner.is_null() if self.owner == UNOWNED else Item.owner == self.owner
        return condition

    def within(self, moment: pw.Field) -> pw.Expression:
        return (moment >= self.since) & (moment < self.until)


def figures(config: Config, scope: Scope, now: datetime) -> dict[str, Any]:
    """Every figure of the period, as of `now` (for a period that ends later, what happened up to now)."""
    as_of = min(scope.until, now)
    return {"since": scope.since, "until": scope.until, "queue": scope.queue, "owner": scope.owner,
            **_requests(scope), **_first_response(config, scope), **_done(scope), **_date_moves(scope),
            "late_without_notice": _late_without_notice(scope, as_of), **_silence(config, scope, as_of),
            **_reopened(scope), **_satisfaction(scope), **_open_by_age(scope, now), **_turned_away(scope)}


def breakdown(config: Config, scope: Scope, now: datetime, by: str) -> list[dict[str, Any]]:
    """The figures per week or month of the period (team's timezone), or per queue or owner; each with its key."""
    if by in ("week", "month"):
        return [{"key": key, **figures(config, part, now)} for key, part in _periods(config, scope, by)]
    if by not in ("queue", "owner"):
        raise ValueError(f"--by {by}: one of {', '.join(BREAKDOWNS)}")
    column = Item.queue if by == "queue" else Item.owner
    active = scope.items() & (scope.within(Item.created_at) | scope.within(Item.resolved_at))
    keys = sorted({value or UNOWNED for (value,) in Item.select(column).where(active).distinct().tuples()})
    parts = [replace(scope, queue=key) if by == "queue" else replace(scope, owner=key) for key in keys]
    return [{"key": key or "(nobody)", **figures(config, part, now)} for key, part in zip(keys, parts, strict=True)]


def open_now(config: Config, now: datetime, scope: Scope, at_risk_by: datetime | None = None) -> dict[str, Any]:
    """The open items past their date, and those due by `at_risk_by` that nobody confirmed (#ontrack).

    `at_risk_by` is by default the end of the next workday (the digest's sweep passes its own).
    """
    at_risk_by = at_risk_by or config.calendar.add(now, AT_RISK_WITHIN)
    running = scope.items() & Item.status.in_(OPEN_STATUSES) & not_paused()
    late = Item.select().where(running & (Item.due_at < now)).order_by(Item.due_at)
    risky = Item.select().where(running & (Item.due_at >= now) & (Item.due_at <= at_risk_by)
                                & (Item.on_track == False)).order_by(Item.due_at)  # noqa: E712
    return {"late_count": late.count(), "late": [_line(i, config) for i in late.limit(LISTED)],
            "at_risk_count": risky.count(), "at_risk": [_line(i, config) for i in risky.limit(LISTED)]}


def _line(item: Item, config: Config) -> dict[str, Any]:
    owner = config.team.member(item.owner) if item.owner else None
    return {"ref": config.team.ref(item.id), "subject": item.subject, "due_at": item.due_at,
            "owner_name": owner.name if owner else (item.owner or "nobody"), "status": item.status}


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def _count_if(condition: pw.Expression) -> pw.Expression:
    return pw.fn.COALESCE(pw.fn.SUM(pw.Case(None, [(condition, 1)], 0)), 0)


def _seconds(later: pw.Node, earlier: pw.Node) -> pw.Node:
    """Wall-clock seconds from `earlier` to `later`, in this database's SQL."""
    if isinstance(db.obj, pw.PostgresqlDatabase):
        return pw.fn.EXTRACT(pw.NodeList((pw.SQL("EPOCH FROM"), pw.NodeList((later, pw.SQL("-"), earlier)))))
    return (pw.fn.julianday(later) - pw.fn.julianday(earlier)) * 86400.0


def _requests(scope: Scope) -> dict[str, Any]:
    quick = Item.acknowledged_at.is_null(False) & \
        (_seconds(Item.acknowledged_at, Item.created_at) <= ACK_WITHIN_SECONDS + 0.001)
    requests, acknowledged, quickly = Item.select(
        pw.fn.COUNT(Item.id), pw.fn.COUNT(Item.acknowledged_at), _count_if(quick)).where(
        scope.items() & scope.within(Item.created_at)).tuples().get()
    return {"requests": requests, "acknowledged": acknowledged, "acknowledged_in_60s": quickly,
            "acknowledged_in_60s_pct": _pct(quickly, requests)}


def _first_response(config: Config, scope: Scope) -> dict[str, Any]:
    """Business minutes from a request to the first word a person sent its requester: median, p90, histogram."""
    answered = scope.items() & scope.within(Item.created_at) & Item.first_response_minutes.is_null(False)
    minutes = Item.first_response_minutes
    day = config.calendar.day_minutes
    bounds = [*FIRST_RESPONSE_BUCKETS, ("≤ 1 business day", day), ("≤ 3 business days", 3 * day)]
    counts = Item.select(pw.fn.COUNT(Item.id), *[_count_if(minutes <= upto) for _, upto in bounds]).where(
        answered).tuples().get()
    count, cumulative = counts[0], [*counts[1:], counts[0]]
    histogram = [{"label": label, "upto_minutes": upto, "count": cumulative[n] - (cumulative[n - 1] if n else 0)}
                 for n, (label, upto) in enumerate([*bounds, ("more", None)])]

    def rank(share: float) -> int | None:  # nearest rank: the smallest value with at least `share` of all at or below
        if not count:
            return None
        offset = -(-count * int(share * 100) // 100) - 1
        return Item.select(minutes).where(answered).order_by(minutes).limit(1).offset(offset).scalar()

    return {"first_response_count": count, "first_response_median_minutes": rank(0.5),
            "first_response_p90_minutes": rank(0.9), "first_response_histogram": histogram}


def _done(scope: Scope) -> dict[str, Any]:
    on_time = Item.due_at.is_null() | (Item.resolved_at <= Item.due_at)
    done, in_time = Item.select(pw.fn.COUNT(Item.id), _count_if(on_time)).where(
        scope.items() & (Item.status == Status.DONE) & scope.within(Item.resolved_at)).tuples().get()
    return {"done": done, "done_on_time": in_time, "done_on_time_pct": _pct(in_time, done)}


def _noticed_before(item: pw.Node, date: pw.Node) -> pw.Expression:
    """The requester's "we may not make it" notice for this date left before the date."""
    mail = Outbox.alias()
    return pw.fn.EXISTS(Notice.select(Notice.id).join(mail, on=(mail.item == Notice.item)).where(
        (Notice.item == item) & (Notice.kind == "deadline_notice") & (Notice.for_date == date)
        & (mail.kind == "deadline_notice") & (mail.sent_at >= Notice.created_at) & (mail.sent_at <= date)))


def _date_moves(scope: Scope) -> dict[str, Any]:
    """Dates moved later by a member; told before: the new date's mail, or the notice, left before the old date."""
    mail = Outbox.alias()
    moved_in_time = pw.fn.EXISTS(mail.select(mail.id).where(
        (mail.item == DateMove.item) & (mail.kind == "deadline_changed") & (mail.sent_at >= DateMove.at)
        & (mail.sent_at <= DateMove.old_due)))
    told = moved_in_time | _noticed_before(DateMove.item, DateMove.old_due)
    moved, in_time = DateMove.select(pw.fn.COUNT(DateMove.id), _count_if(told)).join(Item).where(
        scope.items() & scope.within(DateMove.at)).tuples().get()
    return {"dates_moved": moved, "dates_moved_told_before": in_time,
            "dates_moved_told_before_pct": _pct(in_time, moved)}


def _late_without_notice(scope: Scope, as_of: datetime) -> int:
    """Promised dates in the period that passed with the item not done and the requester not told before.

    A date passed when a member moved it only after it had gone by, or when the item is still open past it
    (its clock running: not waiting on the requester), or was closed after it. Told: the notice for that
    date left (not only was queued) before it.
    """
    moved_late = DateMove.select(pw.fn.COUNT(DateMove.id)).join(Item).where(
        scope.items() & scope.within(DateMove.old_due) & (DateMove.old_due < DateMove.at)
        & ~_noticed_before(DateMove.item, DateMove.old_due)).scalar()
    missed = (Item.status.in_(OPEN_STATUSES) & not_paused()) | \
        (Item.status.not_in(OPEN_STATUSES) & (Item.resolved_at > Item.due_at))
    late = Item.select(pw.fn.COUNT(Item.id)).where(
        scope.items() & scope.within(Item.due_at) & (Item.due_at < as_of) & missed
        & ~_noticed_before(Item.id, Item.due_at)).scalar()
    return moved_late + late


def _silence(config: Config, scope: Scope, as_of: datetime) -> dict[str, Any]:
    """Requests whose requester heard nothing from us for longer than `update_every` (business time), in the period.

    A silence belongs to the period in which it ran over. Heard: when the acknowledgement or any other
    mail to the requester left (mail still in the outbox was not heard), and a member's own answer to
    them with the team copied. A wait on the requester (#waiting) counts: no status update goes out then.
    """
    calendar, every = config.calendar, config.service.update_every
    silent: set[int] = set()
    longest = None
    for item_id, heard, next_heard in _long_gaps(scope, as_of, _shortest_wall_seconds(every)):
        overdue = calendar.add(heard, every)
        if next_heard > overdue + SILENCE_GRACE and scope.since <= overdue < scope.until:
            silent.add(item_id)
            minutes = calendar.working_minutes(heard, next_heard)
            longest = minutes if longest is None else max(longest, minutes)
    return {"silent": len(silent), "longest_silence_minutes": longest}


def _shortest_wall_seconds(duration: Duration) -> float:
    """The least wall-clock time `duration` can span (business time runs only part of it; a DST hour less)."""
    unit = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 7 * 86400}[duration.unit]
    return max(0, duration.amount * unit - 3600)


def _long_gaps(scope: Scope, as_of: datetime, at_least: float) -> Iterator[tuple[int, datetime, datetime]]:
    """(item, heard, next heard or the end) of each wall-clock gap of `at_least` seconds in items alive in the period.

    The end of an item is when it was closed, or `as_of` while it is open. Computed in SQL (a window
    over the moments each requester heard from us), so only the long gaps reach Python.
    """
    end_of = pw.Case(None, [(Item.status.in_(OPEN_STATUSES), as_of)], Item.resolved_at)
    alive = scope.items() & (Item.created_at < min(scope.until, as_of)) & (end_of >= scope.since) & \
        (_seconds(end_of, Item.created_at) >= at_least)
    told = (Item.select(Item.id.alias("item_id"), Item.created_at.alias("at")).where(alive)
            .union_all(Outbox.select(Outbox.item, Outbox.sent_at).join(Item).where(
                alive & (Outbox.recipient == Item.requester) & (Outbox.sent_at < end_of)))
            .union_all(Event.select(Event.item, Event.at).join(Item).where(  # a member's answer, the team copied
                alive & (Event.kind == "answered") & (Event.actor != Item.requester) & (Event.at < end_of)))
            .union_all(Item.select(Item.id, end_of).where(alive)))
    moments = told.cte("told", columns=("item_id", "at"))
    previous = pw.fn.LAG(moments.c.at).over(partition_by=[moments.c.item_id], order_by=[moments.c.at])
    gaps = (pw.Select([moments], [moments.c.item_id, previous.alias("heard"), moments.c.at.alias("next")])
            .cte("gaps", columns=("item_id", "heard", "next")))
    query = (pw.Select([gaps], [gaps.c.item_id, gaps.c.heard, gaps.c.next])
             .where(gaps.c.heard.is_null(False) & (_seconds(gaps.c.next, gaps.c.heard) >= at_least))
             .with_cte(moments, gaps).bind(db))
    moment = Item.created_at.python_value
    for item_id, heard, next_heard in query.tuples():
        yield item_id, moment(heard), moment(next_heard)  # type: ignore[misc]  # never NULL: filtered above


def _reopened(scope: Scope) -> dict[str, Any]:
    reopened = Event.select(pw.fn.COUNT(Event.item.distinct())).join(Item).where(
        scope.items() & (Event.kind == "reopened") & scope.within(Event.at)).scalar()
    done = Item.select(pw.fn.COUNT(Item.id)).where(
        scope.items() & (Item.status == Status.DONE) & scope.within(Item.resolved_at)).scalar()
    return {"reopened": reopened, "reopened_pct": _pct(reopened, done)}


def _satisfaction(scope: Scope) -> dict[str, Any]:
    done = scope.items() & (Item.status == Status.DONE) & scope.within(Item.resolved_at)
    rows = Item.select(Item.satisfaction, pw.fn.COUNT(Item.id)).where(done).group_by(Item.satisfaction).tuples()
    counts = {score: n for score, n in rows}
    ratings = {str(score): counts.get(score, 0) for score in range(1, 6)}
    rated, total = sum(ratings.values()), sum(counts.values())
    average = sum(int(score) * n for score, n in ratings.items()) / rated if rated else None
    return {"satisfaction_average": round(average, 2) if average is not None else None,
            "satisfaction": ratings, "rated": rated, "rating_response_pct": _pct(rated, total)}


def _open_by_age(scope: Scope, now: datetime) -> dict[str, Any]:
    """The items open now, by wall-clock days since they came in."""
    younger = [_count_if(Item.created_at > now - timedelta(days=days)) for _, days in OPEN_AGES]
    counts = Item.select(pw.fn.COUNT(Item.id), *younger).where(
        scope.items() & Item.status.in_(OPEN_STATUSES)).tuples().get()
    total, cumulative = counts[0], [*counts[1:], counts[0]]
    labels = [label for label, _ in OPEN_AGES] + ["4 weeks or more"]
    return {"open_now": total, "open_by_age": [
        {"label": label, "count": cumulative[n] - (cumulative[n - 1] if n else 0)} for n, label in enumerate(labels)]}


def _turned_away(scope: Scope) -> dict[str, Any]:
    """Items declined or handed to another team by a member, and mail a rule declined or redirected."""
    closed = Item.select(Item.status, pw.fn.COUNT(Item.id)).where(
        scope.items() & Item.status.in_([Status.DECLINED, Status.REDIRECTED]) & scope.within(Item.resolved_at)
    ).group_by(Item.status).tuples()
    counts = {str(status): n for status, n in closed}
    if scope.queue is None and scope.owner is None:  # a rule's answer belongs to no queue or owner
        for outcome, n in Message.select(Message.outcome, pw.fn.COUNT(Message.id)).where(
                (Message.direction == "in") & Message.outcome.in_(["declined", "redirected"])
                & scope.within(Message.created_at)).group_by(Message.outcome).tuples():
            counts[outcome] = counts.get(outcome, 0) + n
    return {"declined": counts.get("declined", 0), "redirected": counts.get("redirected", 0)}


def _periods(config: Config, scope: Scope, by: str) -> Iterator[tuple[str, Scope]]:
    """The weeks (from Monday) or months of the period in the team's timezone, each clipped to the period."""
    tz = config.calendar.tz
    local = scope.since.astimezone(tz)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    start = start - timedelta(days=start.weekday()) if by == "week" else start.replace(day=1)
    while start.astimezone(scope.until.tzinfo) < scope.until:
        if by == "week":
            iso = start.isocalendar()
            end, key = start + timedelta(days=7), f"{iso.year}-W{iso.week:02d}"
        else:
            end, key = (start + timedelta(days=32)).replace(day=1), f"{start:%Y-%m}"
        end = end.replace(tzinfo=tz)  # wall-clock midnight, whatever the offset was a week before (DST)
        yield key, replace(scope, since=max(scope.since, start), until=min(scope.until, end))
        start = end
