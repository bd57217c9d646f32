"""`inboxd report` and `/report`: one self-contained page of the service's figures, charts and open items.

The figures are `stats`'s (one place computes them); this module only asks for them and lays them out.
The page needs nothing from outside: inline CSS and SVG, no scripts (its Content-Security-Policy allows
none, so a subject that slipped through escaping still could not run), safe to attach to a mail.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from importlib.resources import files
from typing import Any

import jinja2
from markupsafe import Markup

from . import charts
from .settings import Config
from .stats import Scope, breakdown, figures, open_now
from .wording import local_day, short_time

WEEKS = 12  # the default period, and the weeks a digest's trend looks back
POLICY = "default-src 'none'; style-src 'unsafe-inline'"  # no scripts, fonts, images or requests of any kind

# The headline row: the promises of inboxd, each one figure.
HEADLINE = ("requests", "acknowledged_in_60s_pct", "first_response_median_minutes", "done_on_time_pct",
            "dates_moved_told_before_pct", "late_without_notice", "satisfaction_average")
# Every single-valued figure of `stats`, with its words; the table at the foot of the page lists them all.
LABELS = {
    "requests": "Requests in", "acknowledged": "Acknowledged",
    "acknowledged_in_60s": "Acknowledged within 60 s", "acknowledged_in_60s_pct": "Acknowledged within 60 s",
    "first_response_count": "First responses", "first_response_median_minutes": "First response, median",
    "first_response_p90_minutes": "First response, 90th percentile", "done": "Done",
    "done_on_time": "Done by the promised date", "done_on_time_pct": "Done on time",
    "dates_moved": "Dates moved", "dates_moved_told_before": "Dates moved, requester told before",
    "dates_moved_told_before_pct": "Told before a date moved", "late_without_notice": "Late without notice",
    "silent": "Left silent longer than update_every", "longest_silence_minutes": "Longest silence",
    "reopened": "Reopened", "reopened_pct": "Reopened", "satisfaction_average": "Satisfaction (of 5)",
    "rated": "Ratings", "rating_response_pct": "Ratings per request done", "open_now": "Open now",
    "declined": "Declined", "redirected": "Redirected"}


def week_start(moment: datetime, config: Config, weeks_back: int = 0) -> datetime:
    """Monday 00:00 in the team's timezone of the moment's week, or of a week that many weeks before."""
    local = moment.astimezone(config.calendar.tz)
    monday = (local - timedelta(days=local.weekday() + 7 * weeks_back)).date()
    return datetime(monday.year, monday.month, monday.day, tzinfo=config.calendar.tz)


def default_scope(config: Config, now: datetime, queue: str | None = None, owner: str | None = None) -> Scope:
    """The last WEEKS weeks up to now, whole weeks from a Monday in the team's timezone, this week included."""
    return Scope(since=week_start(now, config, WEEKS - 1), until=now, queue=queue, owner=owner, team=config.team.key)


def gather(config: Config, scope: Scope, now: datetime, trend: Scope | None = None) -> dict[str, Any]:
    """The period's figures, its weeks (or `trend`'s) and the items late or at risk now."""
    weeks = breakdown(config, trend or scope, now, by="week")
    return {"figures": figures(config, scope, now), "weeks": weeks, "open": open_now(config, now, scope)}


def week_label(key: str) -> str:
    """`2026-W45` -> `W45`: short enough for twelve bars side by side."""
    return key.rpartition("-")[2] or key


def chart_rows(data: dict[str, Any]) -> dict[str, list[charts.Row]]:
    """What each chart shows, as (label, value) rows: the page and the digest draw the same ones."""
    weeks, found = data["weeks"], data["figures"]
    return {
        "requests": [(week_label(w["key"]), w["requests"]) for w in weeks],
        "on_time": [(week_label(w["key"]), w["done_on_time_pct"]) for w in weeks],
        "told_before": [(week_label(w["key"]), w["dates_moved_told_before_pct"]) for w in weeks],
        "first_response": [(b["label"], b["count"]) for b in found["first_response_histogram"]],
        "satisfaction": [(n, found["satisfaction"].get(n, 0)) for n in ("1", "2", "3", "4", "5")],
        "open_by_age": [(b["label"], b["count"]) for b in found["open_by_age"]],
    }


def minutes(value: int | None) -> str:
    """Business minutes as people read them: `45 min`, `3 h 20 min`."""
    if value is None:
        return "–"
    hours, rest = divmod(int(value), 60)
    return f"{hours} h {rest} min" if hours and rest else f"{hours} h" if hours else f"{rest} min"


def shown(key: str, value: Any) -> str:
    """A figure as the page writes it."""
    if key.endswith("_minutes"):
        return minutes(value)
    return charts.number(value, " %" if key.endswith("_pct") else "")


def page(config: Config, data: dict[str, Any], now: datetime) -> str:
    """The whole page, one string of HTML; every text from the database escaped by the template."""
    found, rows, tz = data["figures"], chart_rows(data), config.calendar.tz
    labels = [label for label, _ in rows["requests"]]

    def figure(key: str) -> dict[str, Any]:
        value = found[key]
        return {"key": key, "label": LABELS[key], "shown": shown(key, value),
                "raw": "" if value is None else str(value),
                "alert": key == "late_without_notice" and (value or 0) > 0}

    drawn: list[tuple[str, Callable[[str], str]]] = [  # a title, and how to draw the chart under it
        ("Requests per week", lambda t: charts.svg_bars("requests", t, rows["requests"])),
        ("Done on time and told before a date moved, % by week", lambda t: charts.svg_lines(
            "rates", t, labels, [("Done on time", charts.GREEN, [v for _, v in rows["on_time"]]),
                                 ("Told before a date moved", charts.ORANGE, [v for _, v in rows["told_before"]])])),
        ("First response in business time (requests)",
         lambda t: charts.svg_hbars("first-response", t, rows["first_response"])),
        ("Satisfaction, 1 (poor) to 5 (great) (ratings)",
         lambda t: charts.svg_bars("satisfaction", t, rows["satisfaction"], colour=charts.GREEN)),
        ("Open now, by age (items)", lambda t: charts.svg_hbars("open-by-age", t, rows["open_by_age"],
                                                                 colour=charts.GREY)),
    ]
    until = found["until"] if isinstance(found["until"], datetime) else now
    return _template().render(
        team=config.team.name, policy=POLICY, now=short_time(now, tz),
        since=local_day(found["since"], tz), until=local_day(until - timedelta(microseconds=1), tz),
        queue=found.get("queue"), owner=found.get("owner"),
        headline=[figure(k) for k in HEADLINE], everything=[figure(k) for k in LABELS],
        charts=[{"title": title, "svg": Markup(draw(title))} for title, draw in drawn],  # charts.py escapes
        late=data["open"]["late"], late_count=data["open"]["late_count"],
        at_risk=data["open"]["at_risk"], at_risk_count=data["open"]["at_risk_count"],
        when=lambda moment: short_time(moment, tz) if moment else "–")


@cache
def _template() -> jinja2.Template:
    text = files("inboxd").joinpath("report.html").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    return env.from_string(text)
