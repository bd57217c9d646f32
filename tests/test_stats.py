"""`inboxd stats` on a simulated month: each figure equals the one computed here, in Python, from the stored events."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import datetime, timedelta

from click.testing import CliRunner
from month_data import END, START

from inboxd.cli import cli
from inboxd.domain import OPEN_STATUSES
from inboxd.models import DateMove, Event, Item, Message, Notice, Outbox, open_database
from inboxd.promises import paused

PERIOD = ["--since", "2026-11-02", "--until", "2026-11-29", "--at", END.isoformat()]


def comparable(shown: dict) -> dict:
    """The figures with their lists of buckets as plain counts."""
    return {**shown, "first_response_histogram_counts": [b["count"] for b in shown["first_response_histogram"]],
            "open_by_age_counts": [b["count"] for b in shown["open_by_age"]]}


def run(month, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(month.config_path), "stats", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_every_figure_equals_the_one_computed_from_the_events(month):
    shown = comparable(json.loads(run(month, *PERIOD, "--json")))
    expected = independent_figures(month, START, END, END)
    assert {key: shown[key] for key in expected} == expected
    # The simulation did what the figures say: every kind of thing counted happened.
    assert shown["dates_moved"] == month.did["eta_in_time"] + month.did["eta_late"]
    assert shown["rated"] == sum(n for kind, n in month.did.items() if kind.startswith("rated_"))
    assert 0 < shown["late_without_notice"] and 0 < shown["silent"] and 0 < shown["reopened"]
    assert 0 < shown["acknowledged_in_60s"] < shown["acknowledged"] == shown["requests"] == 1000


def test_the_weeks_add_up_and_each_week_equals_its_own_computation(month):
    by_week = json.loads(run(month, *PERIOD, "--by", "week", "--json"))
    rows = by_week["rows"]
    assert [row["key"] for row in rows] == ["2026-W45", "2026-W46", "2026-W47", "2026-W48"]
    for key in ("requests", "done", "dates_moved", "late_without_notice", "rated", "declined"):
        assert sum(row[key] for row in rows) == by_week["total"][key], key
    second = comparable(rows[1])
    expected = independent_figures(month, datetime.fromisoformat(second["since"]),
                                   datetime.fromisoformat(second["until"]), END)
    assert {key: second[key] for key in expected} == expected


def test_the_csv_opens_in_the_csv_module_with_the_same_numbers(month):
    shown = json.loads(run(month, *PERIOD, "--json"))
    rows = list(csv.DictReader(io.StringIO(run(month, *PERIOD, "--csv"))))
    assert len(rows) == 1
    row = rows[0]
    for key in ("requests", "acknowledged_in_60s", "done", "done_on_time", "late_without_notice", "silent", "rated"):
        assert int(row[key]) == shown[key], key
    assert float(row["done_on_time_pct"]) == shown["done_on_time_pct"]
    assert [int(row[f"satisfaction_{n}"]) for n in range(1, 6)] == [shown["satisfaction"][str(n)] for n in range(1, 6)]
    by_owner = list(csv.DictReader(io.StringIO(run(month, *PERIOD, "--by", "owner", "--csv"))))
    assert {r["key"] for r in by_owner} == {"(nobody)", "ana@example.org", "bo@example.org"}
    assert sum(int(r["requests"]) for r in by_owner) == shown["requests"]


def test_the_table_for_people_names_each_figure(month):
    text = run(month, *PERIOD)
    assert "Mon 02 Nov 2026 to Sun 29 Nov 2026" in text
    shown = json.loads(run(month, *PERIOD, "--json"))
    assert f"late without notice (should be 0)     {shown['late_without_notice']}" in text
    assert f"done by the promised date             {shown['done_on_time_pct']} %" in text


def test_a_queue_or_an_owner_only_counts_theirs(month):
    ana = comparable(json.loads(run(month, *PERIOD, "--owner", "ANA@example.org", "--json")))
    assert ana["owner"] == "ana@example.org"
    expected = independent_figures(month, START, END, END, owner="ana@example.org")
    assert {key: ana[key] for key in expected} == expected
    assert 0 < ana["requests"] < 1000 and ana["late_without_notice"] > 0


def test_bad_dates_are_usage_errors_naming_the_option(month):
    result = CliRunner().invoke(cli, ["--config", str(month.config_path), "stats", "--since", "last week"])
    assert result.exit_code == 2 and "--since" in result.output and "2026-11-02" in result.output
    result = CliRunner().invoke(cli, ["--config", str(month.config_path), "stats", "--since", "2026-11-10",
                                      "--until", "2026-11-01"])
    assert result.exit_code == 2 and "before --since" in result.output


def independent_figures(month, since: datetime, until: datetime, now: datetime, owner: str | None = None) -> dict:
    """The figures, computed row by row in Python from items, events, notices and mail (docs/stats.md)."""
    config = month.config
    open_database(config.database_url)
    calendar, every = config.calendar, config.service.update_every
    as_of = min(until, now)
    items = [i for i in Item.select() if owner is None or i.owner == owner]
    ids = {i.id for i in items}

    def within(moment) -> bool:
        return moment is not None and since <= moment < until

    def pct(part, whole):
        return round(100 * part / whole, 1) if whole else None

    created = [i for i in items if within(i.created_at)]
    acked = [i for i in created if i.acknowledged_at]
    quick = [i for i in acked if (i.acknowledged_at - i.created_at).total_seconds() <= 60]
    # First response: recomputed from the two moments with the calendar (not read from the stored minutes).
    minutes = sorted(calendar.working_minutes(i.created_at, i.first_response_at)
                     for i in created if i.first_response_at)
    assert minutes == sorted(i.first_response_minutes for i in created if i.first_response_at)

    def rank(share):
        return minutes[-(-len(minutes) * share // 100) - 1] if minutes else None

    done = [i for i in items if i.status == "done" and within(i.resolved_at)]
    on_time = [i for i in done if i.due_at is None or i.resolved_at <= i.due_at]

    sent = defaultdict(list)  # item -> (kind, recipient, sent_at) of each mail that left
    for row in Outbox.select().where(Outbox.sent_at.is_null(False)):
        sent[row.item_id].append((row.kind, row.recipient, row.sent_at))
    notices = defaultdict(list)
    for n in Notice.select().where(Notice.kind == "deadline_notice"):
        notices[(n.item_id, n.for_date)].append(n.created_at)

    def noticed(item_id, date):
        return any(queued <= at <= date for queued in notices[(item_id, date)]
                   for kind, _, at in sent[item_id] if kind == "deadline_notice")

    moves = [m for m in DateMove.select() if m.item_id in ids]
    moved = [m for m in moves if within(m.at)]
    told = [m for m in moved if noticed(m.item_id, m.old_due) or any(
        kind == "deadline_changed" and m.at <= at <= m.old_due for kind, _, at in sent[m.item_id])]
    late = [m for m in moves if within(m.old_due) and m.old_due < m.at and not noticed(m.item_id, m.old_due)]
    for i in items:
        if not (within(i.due_at) and i.due_at < as_of) or noticed(i.id, i.due_at):
            continue
        running = not paused(i.status, i.waiting_on) or i.paused_at >= i.due_at  # paused after it: missed
        if (i.status in OPEN_STATUSES and running) or \
                (i.status not in OPEN_STATUSES and i.resolved_at and i.resolved_at > i.due_at):
            late.append(i)

    # Heard: each mail to the requester that left, and a member's direct answer; a reopening starts afresh.
    heard = defaultdict(list)
    for e in Event.select().where(Event.kind.in_(["answered", "reopened"])):
        if e.kind == "reopened" or e.actor != e.item.requester:
            heard[e.item_id].append((e.at, e.kind == "reopened"))
    silent, longest = set(), None
    for i in items:
        moments = sorted([(i.created_at, False)] + heard[i.id]
                         + [(at, False) for _, to, at in sent[i.id] if to == i.requester])
        if i.status in OPEN_STATUSES:
            moments.append((as_of, False))
        for (start, _), (stop, afresh) in zip(moments, moments[1:], strict=False):
            overdue = calendar.add(start, every)
            if not afresh and min(stop, as_of) > overdue + timedelta(hours=1) and since <= overdue < until:
                silent.add(i.id)
                gap = calendar.working_minutes(start, min(stop, as_of))
                longest = gap if longest is None else max(longest, gap)

    reopened = {e.item_id for e in Event.select().where(Event.kind == "reopened") if e.item_id in ids and within(e.at)}
    ratings = {str(n): sum(1 for i in done if i.satisfaction == n) for n in range(1, 6)}
    rated = sum(ratings.values())
    open_now = [i for i in items if i.status in OPEN_STATUSES]
    ages = [(now - i.created_at) for i in open_now]
    edges = [timedelta(0), *(timedelta(days=d) for d in (1, 3, 7, 28)), timedelta.max]
    by_age = [sum(1 for a in ages if low <= a < high) for low, high in zip(edges, edges[1:], strict=False)]
    turned = {status: sum(1 for i in items if i.status == status and within(i.resolved_at))
              for status in ("declined", "redirected")}
    if owner is None:
        for m in Message.select().where(Message.direction == "in"):
            if m.outcome in turned and within(m.created_at):
                turned[m.outcome] += 1
    day = calendar.day_minutes
    bounds = [15, 60, 240, day, 3 * day]
    cumulative = [sum(1 for m in minutes if m <= b) for b in bounds] + [len(minutes)]
    return {
        "requests": len(created), "acknowledged": len(acked), "acknowledged_in_60s": len(quick),
        "acknowledged_in_60s_pct": pct(len(quick), len(created)),
        "first_response_count": len(minutes), "first_response_median_minutes": rank(50),
        "first_response_p90_minutes": rank(90),
        "first_response_histogram_counts": [c - (cumulative[n - 1] if n else 0) for n, c in enumerate(cumulative)],
        "done": len(done), "done_on_time": len(on_time), "done_on_time_pct": pct(len(on_time), len(done)),
        "dates_moved": len(moved), "dates_moved_told_before": len(told),
        "dates_moved_told_before_pct": pct(len(told), len(moved)),
        "late_without_notice": len(late), "silent": len(silent), "longest_silence_minutes": longest,
        "reopened": len(reopened), "reopened_pct": pct(len(reopened), len({i.id for i in done} | reopened)),
        "satisfaction": ratings, "rated": rated, "rating_response_pct": pct(rated, len(done)),
        "satisfaction_average": round(sum(int(k) * n for k, n in ratings.items()) / rated, 2) if rated else None,
        "open_now": len(open_now), "open_by_age_counts": by_age,
        "declined": turned["declined"], "redirected": turned["redirected"],
    }


def test_a_silence_is_written_when_the_requester_hears_again_and_a_reopening_starts_afresh(fake_daemon, clock):
    from conversation_helpers import Conversation

    from inboxd.models import Silence
    talk = Conversation(fake_daemon)  # Monday 23 Nov 2026: the acknowledgement leaves at once
    assert talk.item.heard_at == talk.item.acknowledged_at and talk.item.acknowledged_quickly
    assert Silence.select().count() == 0
    clock.advance(timedelta(days=2))  # within three business days: no silence
    talk.owner_says("#take\nRosa, see my mail.", headers={"Cc": "rosa@example.org"})
    assert Silence.select().count() == 0 and talk.item.heard_at == clock.now()
    clock.advance(timedelta(days=7))  # no sweep ran: nobody told Rosa anything for a week
    talk.owner_says("Rosa, the part is here.", headers={"Cc": "rosa@example.org"})  # her word, the team copied
    silence = Silence.get()
    assert silence.heard_at == clock.now() - timedelta(days=7) and silence.ended_at == clock.now()
    assert silence.overdue_at == fake_daemon.config.calendar.add(silence.heard_at, fake_daemon.config.service.update_every)
    assert silence.minutes == fake_daemon.config.calendar.working_minutes(silence.heard_at, silence.ended_at)
    talk.owner_says("#done")  # the thank-you leaves at once: heard
    clock.advance(timedelta(days=5))  # five days closed (longer than update_every), then reopened: no silence
    talk.requester_says("It is broken again.")
    assert talk.item.status == "open" and Silence.select().count() == 1


def test_a_date_moved_while_waiting_on_the_requester_is_no_missed_date(fake_daemon, clock):
    from conversation_helpers import Conversation

    from inboxd.stats import Scope, figures
    talk = Conversation(fake_daemon)  # due Thursday 26 Nov
    talk.owner_says("#take")
    talk.owner_says("#waiting")  # the date's clock stands still from Monday
    clock.advance(timedelta(days=7))  # the old date went by while paused: it had not passed
    talk.owner_says("#eta 2026-12-10")
    move = DateMove.get()
    assert move.old_due > clock.now()  # the date as it stood, the week's pause counted: still ahead
    shown = figures(fake_daemon.config, Scope(clock.now() - timedelta(days=14), clock.now() + timedelta(days=1)),
                    clock.now())
    assert (shown["dates_moved"], shown["dates_moved_told_before"], shown["late_without_notice"]) == (1, 1, 0)


def test_reopened_is_never_more_than_the_items_it_is_a_share_of(fake_daemon, clock):
    from conversation_helpers import Conversation

    from inboxd.stats import Scope, figures
    first, second = (Conversation(fake_daemon, subject=f"Broken {n}", sender=f"r{n}@example.org") for n in (1, 2))
    for talk in (first, second):
        talk.owner_says("#done")  # done on Monday
    clock.advance(timedelta(days=1))
    since = clock.now()
    Conversation(fake_daemon, subject="Another", sender="r3@example.org").owner_says("#done")  # done on Tuesday
    first.requester_says("It is broken again.")
    second.requester_says("Mine too.")  # both reopened on Tuesday, still open
    shown = figures(fake_daemon.config, Scope(since, since + timedelta(days=1)), clock.now())
    assert (shown["done"], shown["reopened"], shown["reopened_pct"]) == (1, 2, round(100 * 2 / 3, 1))


def test_a_date_missed_before_a_wait_on_the_requester_stays_missed(fake_daemon, clock):
    from conversation_helpers import Conversation

    from inboxd.stats import Scope, figures
    talk = Conversation(fake_daemon)
    talk.owner_says("#take")
    due = talk.item.due_at  # Thursday; no sweep runs, nobody tells Rosa
    clock.advance(timedelta(days=4))
    talk.owner_says("#waiting")  # Friday, the date gone by: waiting on her does not hide it
    scope = Scope(clock.now() - timedelta(days=14), clock.now() + timedelta(days=14))
    assert figures(fake_daemon.config, scope, clock.now())["late_without_notice"] == 1
    clock.advance(timedelta(days=14))
    talk.requester_says("Here is what you asked for.")  # the wait ends two weeks on: the date is not moved past it
    assert talk.item.due_at == due and talk.item.status == "open"
    assert figures(fake_daemon.config, scope, clock.now())["late_without_notice"] == 1


def test_a_running_silence_counts_whatever_the_offset_of_the_periods_end(fake_daemon, clock):
    """The period's end in a zone west of UTC (a team in Honolulu asks): compared as a moment, not as text."""
    from zoneinfo import ZoneInfo

    from conversation_helpers import Conversation

    from inboxd.stats import Scope, figures
    talk = Conversation(fake_daemon)  # heard Monday 09:00 UTC; three business days later it ran over
    until = (talk.item.heard_at + timedelta(days=3, hours=6)).astimezone(ZoneInfo("Pacific/Honolulu"))
    clock.advance(timedelta(days=7))
    shown = figures(fake_daemon.config, Scope(talk.item.created_at, until), clock.now())
    assert shown["silent"] == 1 and shown["longest_silence_minutes"] > 0
