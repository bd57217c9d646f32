"""The weekly digest's figures: new, done, on time, late, at risk, satisfaction; for the team or one owner."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from . import stats
from .models import Message, Outbox, team
from .settings import Config
from .stats import Scope


def week_before(slot: datetime, config: Config) -> datetime:
    """The same wall-clock moment a week earlier (DST-safe)."""
    tz = config.calendar.tz
    return (slot.astimezone(tz).replace(tzinfo=None) - timedelta(days=7)).replace(tzinfo=tz)


def digest(config: Config, now: datetime, slot: datetime, at_risk_by: datetime, owner: str | None = None
           ) -> dict[str, Any]:
    """The figures for the week up to `slot`, and the open items as of `now`, for the team or one owner.

    The same definitions as `inboxd stats` (inboxd/stats.py computes both).
    """
    start = week_before(slot, config)
    scope = Scope(start, slot, owner=owner, team=team())
    week = stats.figures(config, scope, now)
    figures = {
        "owner": owner or "", "owner_name": _name(owner, config), "week_from": start, "week_to": slot,
        "new": week["requests"], "done": week["done"], "on_time": week["done_on_time"],
        "on_time_rate": round(100 * week["done_on_time"] / week["done"]) if week["done"] else None,
        "ratings": week["rated"],
        "satisfaction": round(sum(int(score) * n for score, n in week["satisfaction"].items()) / week["rated"], 1)
        if week["rated"] else None,
        "open": week["open_now"], **stats.open_now(config, now, scope, at_risk_by),
        "dead_mail": 0, "needs_attention": 0,
    }
    if owner is None:  # what only the lead can act on: mail that could not go out or could not be read
        figures["dead_mail"] = Outbox.select().where((Outbox.team == team()) & (Outbox.status == "dead") & (
            Outbox.created_at >= start) & (Outbox.created_at < slot)).count()
        figures["needs_attention"] = Message.select().where(
            (Message.team == team()) & (Message.direction == "in") & (Message.outcome == "parked")).count()
    return figures


def _name(address: str | None, config: Config) -> str:
    member = config.team.member(address) if address else None
    return member.name if member else (address or "")


def picture(config: Config, now: datetime, slot: datetime, owner: str | None = None) -> dict[str, Any]:
    """What the HTML part draws: the week's figures (`stats`'), its charts and the weeks before, as the report."""
    from .report import HEADLINE, WEEKS, chart_rows, gather, shown, week_start
    trend = Scope(since=week_start(slot, config, WEEKS), until=week_start(slot, config), owner=owner,
                  team=team())  # whole weeks
    data = gather(config, Scope(since=week_before(slot, config), until=slot, owner=owner, team=team()), now, trend)
    found = data["figures"]
    return {"figures": found, "shown": {key: shown(key, found[key]) for key in HEADLINE}, "charts": chart_rows(data)}
