"""The weekly digest's figures: new, done, on time, late, at risk, satisfaction; for the team or one owner."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import peewee as pw

from .domain import OPEN_STATUSES
from .models import Item, Message, Outbox
from .queries import not_paused
from .settings import Config

LISTED = 25  # items named per list; the counts are always whole


def week_before(slot: datetime, config: Config) -> datetime:
    """The same wall-clock moment a week earlier (DST-safe)."""
    tz = config.calendar.tz
    return (slot.astimezone(tz).replace(tzinfo=None) - timedelta(days=7)).replace(tzinfo=tz)


def digest(config: Config, now: datetime, slot: datetime, at_risk_by: datetime, owner: str | None = None
           ) -> dict[str, Any]:
    """The figures for the week up to `slot`, and the open items as of `now`, for the team or one owner."""
    start = week_before(slot, config)
    mine = (Item.owner == owner) if owner else (Item.id.is_null(False))
    opened = Item.status.in_(OPEN_STATUSES) & mine
    week = (Item.resolved_at >= start) & (Item.resolved_at < slot) & mine
    done = list(Item.select(Item.resolved_at, Item.due_at).where((Item.status == "done") & week).tuples())
    on_time = sum(1 for resolved, due in done if due is None or resolved <= due)
    rated = Item.select(pw.fn.COUNT(Item.satisfaction), pw.fn.AVG(Item.satisfaction)).where(
        week & Item.satisfaction.is_null(False)).tuples().get()
    late = Item.select().where(opened & not_paused() & (Item.due_at < now)).order_by(Item.due_at)
    risky = Item.select().where(opened & not_paused() & (Item.due_at >= now) & (Item.due_at <= at_risk_by)
                                & (Item.on_track == False)).order_by(Item.due_at)  # noqa: E712
    figures = {
        "owner": owner or "", "owner_name": _name(owner, config), "week_from": start, "week_to": slot,
        "new": Item.select().where((Item.created_at >= start) & (Item.created_at < slot) & mine).count(),
        "done": len(done), "on_time": on_time,
        "on_time_rate": round(100 * on_time / len(done)) if done else None,
        "ratings": rated[0], "satisfaction": round(float(rated[1]), 1) if rated[0] else None,
        "open": Item.select().where(opened).count(),
        "late_count": late.count(), "late": [_line(i, config) for i in late.limit(LISTED)],
        "at_risk_count": risky.count(), "at_risk": [_line(i, config) for i in risky.limit(LISTED)],
        "dead_mail": 0, "needs_attention": 0,
    }
    if owner is None:  # what only the lead can act on: mail that could not go out or could not be read
        figures["dead_mail"] = Outbox.select().where(
            (Outbox.status == "dead") & (Outbox.created_at >= start) & (Outbox.created_at < slot)).count()
        figures["needs_attention"] = Message.select().where(
            (Message.direction == "in") & (Message.outcome == "parked")).count()
    return figures


def _name(address: str | None, config: Config) -> str:
    member = config.team.member(address) if address else None
    return member.name if member else (address or "")


def _line(item: Item, config: Config) -> dict[str, Any]:
    owner = config.team.member(item.owner) if item.owner else None
    return {"ref": config.team.ref(item.id), "subject": item.subject, "due_at": item.due_at,
            "owner_name": owner.name if owner else (item.owner or "nobody"), "status": item.status}


def picture(config: Config, now: datetime, slot: datetime, owner: str | None = None) -> dict[str, Any]:
    """What the HTML part draws: the week's figures (`stats`'), its charts and the weeks before, as the report."""
    from .report import HEADLINE, WEEKS, chart_rows, gather, shown, week_start
    from .stats import Scope
    trend = Scope(since=week_start(slot, config, WEEKS), until=week_start(slot, config), owner=owner)  # whole weeks
    data = gather(config, Scope(since=week_before(slot, config), until=slot, owner=owner), now, trend)
    found = data["figures"]
    return {"figures": found, "shown": {key: shown(key, found[key]) for key in HEADLINE}, "charts": chart_rows(data)}
