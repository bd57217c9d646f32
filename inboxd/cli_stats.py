"""`inboxd stats`: the team's figures over a period, as a table for people or JSON and CSV for tools."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, time, timedelta
from typing import Any

import click

from .clock import SystemClock
from .settings import Config
from .stats import BREAKDOWNS, Scope

DEFAULT_DAYS = 28  # without --since: the last four weeks, today included

# (key, label, unit) of the figures shown to people, in order; docs/stats.md defines each.
SHOWN = (
    ("requests", "requests in", ""),
    ("acknowledged", "acknowledged", ""),
    ("acknowledged_in_60s_pct", "acknowledged within 60 s", "%"),
    ("first_response_median_minutes", "first response, median", "min"),
    ("first_response_p90_minutes", "first response, p90", "min"),
    ("done", "done", ""),
    ("done_on_time_pct", "done by the promised date", "%"),
    ("dates_moved", "dates moved later", ""),
    ("dates_moved_told_before_pct", "moved dates told before the old date", "%"),
    ("late_without_notice", "late without notice (should be 0)", ""),
    ("silent", "left silent longer than update_every", ""),
    ("longest_silence_minutes", "longest silence", "min"),
    ("reopened_pct", "reopened (of done)", "%"),
    ("satisfaction_average", "satisfaction (1-5)", ""),
    ("rating_response_pct", "rated (of done)", "%"),
    ("open_now", "open now", ""),
    ("declined", "declined", ""),
    ("redirected", "redirected", ""),
)
COLUMNS = (("requests", "IN"), ("acknowledged_in_60s_pct", "ACK60%"), ("first_response_median_minutes", "1ST-MED"),
           ("done", "DONE"), ("done_on_time_pct", "ONTIME%"), ("dates_moved", "MOVED"),
           ("dates_moved_told_before_pct", "TOLD%"), ("late_without_notice", "LATE!"), ("silent", "SILENT"),
           ("reopened_pct", "REOPEN%"), ("satisfaction_average", "SAT"), ("rated", "RATED"))


def _day(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date like 2026-11-02", param_hint=option) from None


def scope_from(config: Config, since: str | None, until: str | None, queue: str | None, owner: str | None,
               today: date) -> Scope:
    """The period from --since (from its midnight) to --until (through its end), in the team's timezone."""
    tz = config.calendar.tz
    first = _day(since, "--since") or today - timedelta(days=DEFAULT_DAYS - 1)
    last = _day(until, "--until") or today
    if last < first:
        raise click.BadParameter(f"{last} is before --since {first}", param_hint="--until")
    return Scope(datetime.combine(first, time(), tz), datetime.combine(last + timedelta(days=1), time(), tz),
                 queue=queue, owner=owner.lower() if owner else None, team=config.team.key)


def jsonable(value: Any) -> Any:
    """Figures as JSON values: moments as ISO-8601 with their offset."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: jsonable(v) for key, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def flat(figures: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: nested figures spread into columns (satisfaction_1 … _5, first_response_le_15, …)."""
    row: dict[str, Any] = {}
    for key, value in jsonable(figures).items():
        if key == "satisfaction":
            row |= {f"satisfaction_{score}": n for score, n in value.items()}
        elif key == "first_response_histogram":
            row |= {f"first_response_{'le_' + str(b['upto_minutes']) if b['upto_minutes'] else 'more'}": b["count"]
                    for b in value}
        elif key == "open_by_age":
            row |= {f"open_{n}": bucket["count"] for n, bucket in enumerate(value)}
        else:
            row[key] = value
    return row


def _shown(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "min":
        hours, minutes = divmod(int(value), 60)
        return f"{hours}h{minutes:02d}" if hours else f"{minutes} min"
    return f"{value}{' %' if unit == '%' else ''}"


@click.command()
@click.option("--since", metavar="DATE", help=f"first day, like 2026-11-02 (default: {DEFAULT_DAYS} days ago)")
@click.option("--until", metavar="DATE", help="last day, included (default: today)")
@click.option("--queue", help="only this queue")
@click.option("--owner", metavar="ADDRESS", help="only this owner's items")
@click.option("--by", type=click.Choice(BREAKDOWNS), help="one row per week, month, queue or owner")
@click.option("--at", metavar="ISO-8601", help="count as of this moment, e.g. 2026-11-30T00:00+01:00 (default: now)")
@click.option("--json", "as_json", is_flag=True, help="JSON for tools")
@click.option("--csv", "as_csv", is_flag=True, help="CSV for spreadsheets: one row per period (or per --by row)")
@click.pass_context
def stats(ctx: click.Context, since: str | None, until: str | None, queue: str | None, owner: str | None,
          by: str | None, at: str | None, as_json: bool, as_csv: bool) -> None:
    """The team's figures over a period, from the database alone (docs/stats.md says what each means).

    With several teams and no --team: each team's, one after the other (JSON: by team key; CSV: a team column).
    """
    from . import stats as figures_of
    from .cli import _moment, _open_db_all
    if as_json and as_csv:
        raise click.UsageError("--json and --csv: choose one")
    teams = _open_db_all(ctx)
    several = len(teams) > 1
    found, lines, tables = {}, [], []
    for config in teams:  # each in its own calendar: business time is the team's
        now = _moment(at, config) if at else SystemClock().now()
        scope = scope_from(config, since, until, queue, owner, now.astimezone(config.calendar.tz).date())
        total = figures_of.figures(config, scope, now)
        rows = figures_of.breakdown(config, scope, now, by) if by else []
        found[config.team.key] = {"by": by, "rows": jsonable(rows), "total": jsonable(total)} if by \
            else jsonable(total)
        team = {"team": config.team.key} if several else {}
        lines += [team | flat({"key": row["key"], **row}) for row in rows] or [team | flat({"key": "total", **total})]
        tables.append(_table(config, scope, total, rows, by))
    if as_json:
        click.echo(json.dumps(found if several else found[teams[0].team.key], indent=2, ensure_ascii=False))
    elif as_csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(lines[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(lines)
        click.echo(out.getvalue(), nl=False)
    else:
        click.echo("\n\n".join(tables))


def _table(config: Config, scope: Scope, total: dict[str, Any], rows: list[dict[str, Any]], by: str | None) -> str:
    """The figures for people: one per line, or a row per week/month/queue/owner and the total."""
    tz = config.calendar.tz
    last = (scope.until - timedelta(days=1)).astimezone(tz)
    what = " ".join(filter(None, [f"queue {scope.queue}" if scope.queue else "",
                                  f"owner {scope.owner or '(nobody)'}" if scope.owner is not None else ""]))
    head = f"{config.team.name}: {scope.since.astimezone(tz):%a %d %b %Y} to {last:%a %d %b %Y}" + \
        (f", {what}" if what else "") + " (times in business hours)"
    if not by:
        width = max(len(label) for _, label, _ in SHOWN)
        return "\n".join([head, *[f"  {label:<{width}}  {_shown(total[key], unit)}" for key, label, unit in SHOWN]])
    units = {key: unit for key, _, unit in SHOWN} | {"rated": ""}
    key_width = max(len(str(row["key"])) for row in [*rows, {"key": "total"}])
    header = f"{by.upper():<{key_width}}  " + "  ".join(f"{name:>7}" for _, name in COLUMNS)
    lines = [head, header]
    for row in [*rows, {**total, "key": "total"}]:
        cells = "  ".join(f"{_shown(row[key], units[key]).replace(' %', '').replace(' min', 'm'):>7}"
                          for key, _ in COLUMNS)
        lines.append(f"{row['key']!s:<{key_width}}  {cells}")
    return "\n".join(lines)
