"""Stats benchmark: `inboxd stats` over a year of N items (SQLite), next to the same command on no items.

Fills a fresh SQLite database with N items created over the last year, each with what a real
one leaves behind: the acknowledgement and a mail to the requester every 1.5 to 3.5 days while it
is open (some gaps longer than `update_every`), a first response for most, done within 1 to 140
hours (many after their date, some with the requester's notice before it; one in a hundred older
items left open, a backlog), a date moved for one in ten, a rating for a third of the done, a
reopening for a few. Then it runs the real command line in a child process, as an admin would:

  baseline: `inboxd stats --json` on the same config with no items (Python, imports, one query each);
  stats:    `inboxd stats --since <a year ago> --json` over all N items;
  by week:  the same with `--by week` (53 periods);

each the median of several runs, with the child's peak RSS (VmHWM), and `stats.figures` alone
in this process (no start-up) with its Python heap's peak (tracemalloc). Run at N/10, N/2 and N:
memory must not grow with N (SQLite's page cache, 2 MB by default, fills by N/2 and stays).

    python bench/stats.py [--items N] [--runs R] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from inboxd.config import load_config
from inboxd.localconfig import write_local_config
from inboxd.clock import BusinessCalendar, Duration
from inboxd.models import (DateMove, Event, Item, Notice, Outbox, Silence, db, new_secret, open_database,
                           use_team)
from inboxd.promises import SILENCE_GRACE
from inboxd.stats import Scope, figures

GOAL_SECONDS = 1.0
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
YEAR = timedelta(days=365)


def fill(count: int, rng: random.Random, calendar: BusinessCalendar, every: Duration) -> None:
    """N items over the last year and their mail, notices, moves, silences and events, with bulk inserts."""
    items, mails, notices, moves, events, silences = [], [], [], [], [], []
    for n in range(1, count + 1):
        created = NOW - timedelta(minutes=rng.randrange(365 * 24 * 60))
        due = created + timedelta(days=rng.choice((3, 4, 5)))
        resolved = created + timedelta(hours=rng.uniform(1, 140))
        # Older items are closed but for a few in a backlog; recent ones are open until their time comes.
        done = resolved < NOW and (created > NOW - timedelta(days=30) or rng.random() < 0.99)
        end = resolved if done else NOW
        answered = rng.random() < 0.85
        items.append({"id": n, "subject": f"Request {n}", "requester": f"user{n % 3000}@example.org",
                      "queue": rng.choice(("default", "facilities", "laptops")), "status": "done" if done else "open",
                      "owner": rng.choice(("ana@example.org", "bo@example.org", None)), "created_at": created,
                      "due_at": due, "acknowledged_at": created + timedelta(seconds=(ack := rng.choice((1, 2, 3, 90)))),
                      "acknowledged_quickly": ack <= 60,
                      "first_response_at": created + timedelta(hours=2) if answered else None,
                      "first_response_minutes": rng.randrange(5, 3000) if answered else None,
                      "resolved_at": resolved if done else None, "secret": new_secret(),
                      "satisfaction": rng.randrange(1, 6) if done and rng.random() < 0.33 else None,
                      "last_told_at": created})
        told, at = [], created + timedelta(seconds=2)  # the acknowledgement, then a mail every 1.5 to 3.5 days
        while at < end:  # and now and then a week without word (the SMTP server away, a long wait)
            told.append(at)
            gap = timedelta(hours=rng.uniform(120, 170) if rng.random() < 0.03 else rng.uniform(36, 84))
            overdue = calendar.add(at, every)
            if at + gap > overdue + SILENCE_GRACE and at + gap < end:
                silences.append({"item": n, "heard_at": at, "overdue_at": overdue, "ended_at": at + gap,
                                 "minutes": calendar.working_minutes(at, at + gap)})
            at += gap
        items[-1]["heard_at"] = told[-1]
        for k, at in enumerate(told):
            mails.append({"item": n, "kind": "ack" if k == 0 else "status_update", "recipients": "[]",
                          "sender": "help@example.org", "subject": "", "message_id": f"<{n}.{k}@bench>", "raw": b"",
                          "recipient": f"user{n % 3000}@example.org", "status": "sent", "next_attempt_at": at,
                          "created_at": at, "sent_at": at})
        if rng.random() < 0.3:
            notices.append({"item": n, "kind": "deadline_notice", "for_date": due, "created_at": due - timedelta(hours=1)})
            mails.append({"item": n, "kind": "deadline_notice", "recipients": "[]", "sender": "help@example.org",
                          "subject": "", "message_id": f"<{n}.n@bench>", "raw": b"",
                          "recipient": f"user{n % 3000}@example.org", "status": "sent",
                          "next_attempt_at": due, "created_at": due - timedelta(hours=1),
                          "sent_at": due - timedelta(minutes=59)})
        if rng.random() < 0.1:
            moves.append({"item": n, "at": created + timedelta(hours=20), "old_due": due, "new_due": due + YEAR / 52})
        events.append({"item": n, "at": created, "actor": "inboxd", "kind": "created", "detail": ""})
        if done and rng.random() < 0.04:
            events.append({"item": n, "at": resolved, "actor": "user", "kind": "reopened", "detail": ""})
    with db.atomic():
        for model, rows in ((Item, items), (Outbox, mails), (Notice, notices), (DateMove, moves), (Event, events),
                            (Silence, silences)):
            for start in range(0, len(rows), 500):
                model.insert_many(rows[start:start + 500]).execute()


def run_cli(config: Path, *args: str) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of `inboxd stats ARGS` in a child process, as an admin runs it."""
    command = [sys.executable, "-c", "import sys\nfrom inboxd.cli import main\ntry:\n    main()\nfinally:\n"
               "    print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0], file=sys.stderr)",
               "--config", str(config), "stats", "--at", NOW.isoformat(), *args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    return elapsed, int(done.stderr.strip().splitlines()[-1]) / 1024


def measure(count: int, folder: Path, runs: int) -> dict[str, Any]:
    """The figures for one database of `count` items: the command line's time and memory, and figures() alone."""
    folder.mkdir()
    config_path = write_local_config(folder, 1143, 1025, "inboxd", "secret")
    config = load_config(config_path)
    open_database(config.database_url)
    use_team(config.team.key)  # the rows are the config's team's, as the daemon writes them
    fill(count, random.Random(count), config.calendar, config.service.update_every)
    db.close()
    since = (NOW - YEAR).date().isoformat()
    result: dict[str, Any] = {"items": count}
    for name, args in (("stats", ("--since", since, "--json")), ("by_week", ("--since", since, "--by", "week",
                                                                             "--json"))):
        timed = [run_cli(config_path, *args) for _ in range(runs)]
        result[f"{name}_seconds"] = statistics.median(r[0] for r in timed)
        result[f"{name}_rss_mb"] = max(r[1] for r in timed)
    open_database(config.database_url, migrate=False)
    scope = Scope(NOW - YEAR, NOW + timedelta(days=1))
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        found = figures(config, scope, NOW)
        times.append(time.perf_counter() - started)
    db.close()
    tracemalloc.start()
    figures(config, scope, NOW)
    result["heap_peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    result["figures_seconds"] = statistics.median(times)
    result["requests"] = found["requests"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5, help="runs of each measurement (the median is shown)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(n, Path(tmp) / f"n{n}", options.runs)
                for n in (0, options.items // 10, options.items // 2, options.items)]
    print(f"inboxd stats on SQLite, {os.cpu_count()} CPUs; median of {options.runs} runs; goal: < {GOAL_SECONDS:.0f} s at "
          f"{options.items:,} items, memory flat")
    print(f"{'items':>9}  {'stats (CLI)':>11}  {'--by week':>9}  {'figures()':>9}  {'peak RSS':>8}  "
          f"{'by week RSS':>11}  {'Python heap':>11}")
    for row in rows:
        print(f"{row['items']:>9,}  {row['stats_seconds']:>9.3f} s  {row['by_week_seconds']:>7.3f} s  "
              f"{row['figures_seconds']:>7.3f} s  {row['stats_rss_mb']:>5.1f} MB  {row['by_week_rss_mb']:>8.1f} MB  "
              f"{row['heap_peak_mb']:>8.2f} MB")
    base, top = rows[0], rows[-1]
    print(f"over the baseline (no items): {top['stats_seconds'] - base['stats_seconds']:+.3f} s, "
          f"{top['stats_rss_mb'] - base['stats_rss_mb']:+.1f} MB at {top['items']:,} items; "
          f"{rows[1]['stats_rss_mb'] - base['stats_rss_mb']:+.1f} MB at {rows[1]['items']:,}, "
          f"{rows[2]['stats_rss_mb'] - base['stats_rss_mb']:+.1f} MB at {rows[2]['items']:,}")
    if options.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
