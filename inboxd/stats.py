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
from typing import Any, cast

import peewee as pw

from .clock import Duration
from .domain import OPEN_STATUSES, Status
from .models import DateMove, Event, Item, Message, Notice, Outbox, Silence
from .promises import AT_RISK_WITHIN, SILENCE_GRACE
from .queries import not_paused
from .settings import Config

LISTED = 25  # late and at-risk items named; the counts are always whole
FIRST_RESPONSE_BUCKETS = (("≤ 15 min", 15), ("≤ 1 h", 60), ("≤ 4 h", 240))  # then ≤ 1 and ≤ 3 business days, more
OPEN_AGES = (("< 1 day", 1), ("1–3 days", 3), ("3–7 days", 7), ("1–4 weeks", 28))  # then "4 weeks or more"
BREAKDOWNS = ("week", "month", "queue", "owner")
UNOWNED = ""  # Scope.owner for items nobody owns
KEYS = ("since", "until", "queue", "owner", "requests", "acknowledged", "acknowledged_in_60s",
        "acknowledged_in_60s_pct", "first_response_count", "first_response_median_minutes",
        "first_response_p90_minutes", "first_response_histogram", "done", "done_on_time", "done_on_time_pct",
        "dates_moved", "dates_moved_told_before", "dates_moved_told_before_pct", "late_without_notice", "silent",
        "longest_silence_minutes", "reopened", "reopened_pct", "satisfaction_average", "satisfaction", "rated",
        "rating_response_pct", "open_now", "open_by_age", "declined", "redirected")  # in the order shown


@dataclass(frozen=True)
class Scope:
    """The period [since, until) of one team (None: all), and optionally one queue or owner (UNOWNED: nobody)."""

    since: datetime
    until: datetime
    queue: str | None = None
    owner: str | None = None
    team: str | None = None

    def items(self) -> pw.Expression:
        """The items of this team, queue and owner, whatever their dates."""
        condition = Item.id.is_null(False) if self.team is None else Item.team == self.team
        if self.queue is not None:
            condition &= Item.queue == self.queue
        if self.owner is not None:
            condition &= Item.owner.is_null() if self.owner == UNOWNED else Item.owner == self.owner
        return condition

    def within(self, moment: pw.Field) -> pw.Expression:
        """This moment of an item (or a row about one) falls in the period."""
        return (moment >= self.since) & (moment < self.until)


def figures(config: Config, scope: Scope, now: datetime) -> dict[str, Any]:
    """Every figure of the period, as of `now` (for a period that ends later, what happened up to now)."""
    as_of = min(scope.until, now)
    found = _items(config, scope)
    for outcome, count in _rules_turned_away(scope).items():
        found[outcome] += count
    ordered = {"since": scope.since, "until": scope.until, "queue": scope.queue, "owner": scope.owner, **found,
               **_date_moves(scope), "late_without_notice": _late_without_notice(scope, as_of),
               **_silence(config, scope, as_of), **_reopened(scope, found["done"]), **_open_by_age(scope, now)}
    return {key: ordered[key] for key in KEYS}


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


def _items(config: Config, scope: Scope) -> dict[str, Any]:
    """The figures read off the items themselves: one pass over those created in the period, one over those closed.

    The created ones come grouped by their minutes to the first response (a few thousand rows at most,
    whatever the number of items): the median, p90 and histogram are counted from the groups.
    """
    minutes = Item.first_response_minutes
    groups = Item.select(minutes, pw.fn.COUNT(Item.id), pw.fn.COUNT(Item.acknowledged_at),
                         _count_if(Item.acknowledged_quickly == True)).where(  # noqa: E712  (kept when it left)
        scope.items() & scope.within(Item.created_at)).group_by(minutes).order_by(minutes).tuples()
    n = {"requests": 0, "acknowledged": 0, "acknowledged_in_60s": 0}
    answered: list[tuple[int, int]] = []  # (minutes, items), ascending
    for value, count, acknowledged, quickly in groups:
        n["requests"] += count
        n["acknowledged"] += acknowledged
        n["acknowledged_in_60s"] += int(quickly)
        if value is not None:
            answered.append((value, count))
    n["first_response_count"] = sum(count for _, count in answered)
    day = config.calendar.day_minutes
    bounds = [*FIRST_RESPONSE_BUCKETS, ("≤ 1 business day", day), ("≤ 3 business days", 3 * day), ("more", None)]
    histogram = [{"label": label, "upto_minutes": upto, "count": sum(
        count for value, count in answered if (upto is None or value <= upto) and (low is None or value > low))}
        for (label, upto), low in zip(bounds, [None, *(upto for _, upto in bounds[:-1])], strict=True)]
    median, p90 = _ranks(answered, n["first_response_count"], (50, 90))
    done = Item.status == Status.DONE
    resolved = {"done": done, "done_on_time": done & (Item.due_at.is_null() | (Item.resolved_at <= Item.due_at)),
                **{f"rated_{score}": done & (Item.satisfaction == score) for score in range(1, 6)},
                "declined": Item.status == Status.DECLINED, "redirected": Item.status == Status.REDIRECTED}
    row = Item.select(*[_count_if(condition) for condition in resolved.values()]).where(
        scope.items() & scope.within(Item.resolved_at)).tuples().get()
    n |= dict(zip(resolved, (int(value) for value in row), strict=True))
    ratings = {str(score): n[f"rated_{score}"] for score in range(1, 6)}
    rated = sum(ratings.values())
    average = sum(int(score) * count for score, count in ratings.items()) / rated if rated else None
    return {"requests": n["requests"], "acknowledged": n["acknowledged"],
            "acknowledged_in_60s": n["acknowledged_in_60s"],
            "acknowledged_in_60s_pct": _pct(n["acknowledged_in_60s"], n["requests"]),
            "first_response_count": n["first_response_count"], "first_response_median_minutes": median,
            "first_response_p90_minutes": p90, "first_response_histogram": histogram,
            "done": n["done"], "done_on_time": n["done_on_time"],
            "done_on_time_pct": _pct(n["done_on_time"], n["done"]),
            "satisfaction_average": round(average, 2) if average is not None else None,
            "satisfaction": ratings, "rated": rated, "rating_response_pct": _pct(rated, n["done"]),
            "declined": n["declined"], "redirected": n["redirected"]}


def _ranks(counted: Any, total: int, percents: tuple[int, ...]) -> list[int | None]:
    """Nearest-rank percentiles (the smallest value with at least p % of all at or below it) of (value, count) rows.

    The rows come sorted from a GROUP BY: memory grows with the distinct values, never with the items.
    """
    wanted = [-(-total * p // 100) for p in percents]  # the 1-based rank of each
    found: list[int | None] = [None] * len(percents)
    seen = 0
    for value, count in counted:
        seen += count
        for k, rank in enumerate(wanted):
            if found[k] is None and seen >= rank > 0:
                found[k] = value
        if all(f is not None for f in found):
            break
    return found


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
    (its clock running, or paused only after the date), or was closed after it. Told: the notice for that
    date left (not only was queued) before it.
    """
    moved_late = DateMove.select(pw.fn.COUNT(DateMove.id)).join(Item).where(
        scope.items() & scope.within(DateMove.old_due) & (DateMove.old_due < DateMove.at)
        & ~_noticed_before(DateMove.item, DateMove.old_due)).scalar()
    missed = (Item.status.in_(OPEN_STATUSES) & (not_paused() | (Item.paused_at >= Item.due_at))) | \
        (Item.status.not_in(OPEN_STATUSES) & (Item.resolved_at > Item.due_at))
    late = Item.select(pw.fn.COUNT(Item.id)).where(
        scope.items() & scope.within(Item.due_at) & (Item.due_at < as_of) & missed
        & ~_noticed_before(Item.id, Item.due_at)).scalar()
    return moved_late + late


def _silence(config: Config, scope: Scope, as_of: datetime) -> dict[str, Any]:
    """Requests whose requester heard nothing from us for longer than `update_every` (business time), in the period.

    A silence belongs to the period in which it ran over. Those that ended by `as_of` were written
    down when they ended (`tracker.Silences`) and are counted in SQL; those still running then (the
    open items not heard from for that long, and rows that ended only later) are measured here, so
    Python holds only the items silent right now, never every silence of the period.
    """
    calendar, every = config.calendar, config.service.update_every
    in_period = scope.items() & scope.within(Silence.overdue_at) & (Silence.overdue_at < as_of)
    ended = in_period & (Silence.ended_at <= as_of)
    count, longest = Silence.select(pw.fn.COUNT(Silence.item.distinct()), pw.fn.MAX(Silence.minutes)).join(Item) \
        .where(ended).tuples().get()
    since_heard = pw.fn.COALESCE(Item.heard_at, Item.created_at)
    cutoff = as_of - timedelta(seconds=_shortest_wall_seconds(every))  # stored as columns are: COALESCE has no type
    still = [(item_id, heard, as_of) for item_id, heard in Item.select(Item.id, since_heard).where(
        scope.items() & Item.status.in_(OPEN_STATUSES) & (since_heard < Item.heard_at.db_value(cutoff)))
        .tuples().iterator()]
    still.extend(Silence.select(Silence.item, Silence.heard_at, Silence.ended_at).join(Item).where(
        in_period & (Silence.ended_at > as_of)).tuples().iterator())
    running: set[int] = set()
    for item_id, heard_at, _ in still:
        heard = cast(datetime, Item.heard_at.python_value(heard_at))
        overdue = calendar.add(heard, every)
        if as_of > overdue + SILENCE_GRACE and scope.since <= overdue < scope.until:
            running.add(item_id)
            minutes = calendar.working_minutes(heard, as_of)
            longest = minutes if longest is None else max(longest, minutes)
    if running:  # an item may have had a silence that ended and have another one running
        count -= Silence.select(pw.fn.COUNT(Silence.item.distinct())).join(Item).where(
            ended & Silence.item.in_(list(running))).scalar()
    return {"silent": count + len(running), "longest_silence_minutes": longest}


def _shortest_wall_seconds(duration: Duration) -> float:
    """The least wall-clock time `duration` can span (business time runs only part of it; a DST hour less)."""
    unit = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 7 * 86400}[duration.unit]
    return max(0, duration.amount * unit - 3600)


def _reopened(scope: Scope, done: int) -> dict[str, Any]:
    """Items reopened in the period; the share is of those done in it and those reopened in it (done before)."""
    done_here = (Item.status == Status.DONE) & scope.within(Item.resolved_at)
    reopened, not_done_here = Event.select(pw.fn.COUNT(Event.item.distinct()), pw.fn.COUNT(pw.Case(
        None, [(~done_here, Event.item)]).distinct())).join(Item).where(
        scope.items() & (Event.kind == "reopened") & scope.within(Event.at)).tuples().get()
    return {"reopened": reopened, "reopened_pct": _pct(reopened, done + not_done_here)}


def _open_by_age(scope: Scope, now: datetime) -> dict[str, Any]:
    """The items open now, by wall-clock days since they came in."""
    younger = [_count_if(Item.created_at > now - timedelta(days=days)) for _, days in OPEN_AGES]
    counts = Item.select(pw.fn.COUNT(Item.id), *younger).where(
        scope.items() & Item.status.in_(OPEN_STATUSES)).tuples().get()
    total, cumulative = counts[0], [*counts[1:], counts[0]]
    labels = [label for label, _ in OPEN_AGES] + ["4 weeks or more"]
    return {"open_now": total, "open_by_age": [
        {"label": label, "count": cumulative[n] - (cumulative[n - 1] if n else 0)} for n, label in enumerate(labels)]}


def _rules_turned_away(scope: Scope) -> dict[str, int]:
    """Mail a rule declined or redirected: it belongs to no queue or owner, so only the whole team's figures have it."""
    if scope.queue is not None or scope.owner is not None:
        return {}
    return dict(Message.select(Message.outcome, pw.fn.COUNT(Message.id)).where(
        (Message.direction == "in") & Message.outcome.in_(["declined", "redirected"])
        & scope.within(Message.created_at) & (Message.id.is_null(False) if scope.team is None else
                                              Message.team == scope.team)).group_by(Message.outcome).tuples())


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
