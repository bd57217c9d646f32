"""Sweep benchmark: one run of the jobs over N open items (SQLite), against a full scan measured in the same run.

Fills a fresh SQLite database with N open items spread over the last 60 days: promised dates
from two months ago to three weeks ahead, a fifth of them late (and already reminded, noticed
and escalated, so the "not sent yet" checks have rows to look at), one in ten waiting on the
requester, the last mail to each requester 0-4 days ago, and K items that fall due right now.
Then it measures, each as the median of several runs:

  baseline: reading every open item into Python (what a sweep that checks items one by one
            must do at the least) and a bare COUNT(*) over them;
  due:      `Sweeper.due(now)`: every job's question to the database, nothing sent;
  run:      `Sweeper.run(now)` for the K due items: Notice rows, rendered mails, outbox rows;
  idle:     `Sweeper.run(now)` again: what the daemon pays every minute when nothing is due;

and memory: the Python heap's peak during `due` at N and at N/10 with the same K due (flat
means the sweep never holds all items), and the process's peak RSS once the database is
filled, after the sweeps, after 50 more, and after the baseline (which holds every item).

    python bench/sweep.py [--items N] [--due K] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from inboxd.checks import check_everything
from inboxd.config import load_config
from inboxd.domain import OPEN_STATUSES
from inboxd.localconfig import write_local_config
from inboxd.models import Item, Notice, db, new_secret, open_database, use_team
from inboxd.sweep import Sweeper

GOAL_SECONDS = 1.0
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc)  # a Wednesday, in business hours


def fill(count: int, due_now: int, rng: random.Random) -> None:
    """N open items and the notices already sent for the late ones, with bulk inserts."""
    rows, notices = [], []
    for n in range(count):
        created = NOW - timedelta(minutes=rng.randrange(60 * 24 * 60))
        late = rng.random() < 0.2
        due = NOW - timedelta(minutes=rng.randrange(1, 60 * 24 * 60)) if late else \
            NOW + timedelta(minutes=rng.randrange(60 * 24 * 2, 60 * 24 * 21))
        status = "waiting" if rng.random() < 0.1 else rng.choice(("new", "open", "working"))
        rows.append({"subject": f"Request {n}", "requester": f"user{n}@example.org", "queue": "default",
                     "owner": "ana@example.org" if status != "new" else None, "status": status,
                     "created_at": created, "due_at": due, "secret": new_secret(),
                     "waiting_on": "requester" if status == "waiting" else None,
                     "last_told_at": NOW - timedelta(minutes=rng.randrange(60 * 24 * 4) if n >= due_now else 1)})
        if late:
            notices += [(n + 1, kind, due) for kind in ("owner_reminder", "deadline_notice", "escalation")]
    for n in range(min(due_now, count)):  # due right now: reminder, notice and escalation all at once
        rows[n].update(status="open", due_at=NOW - timedelta(minutes=1), last_told_at=NOW - timedelta(hours=1))
    notices = [n for n in notices if n[0] > due_now]
    with db.atomic():
        for start in range(0, len(rows), 2000):
            Item.insert_many(rows[start:start + 2000]).execute()
        for start in range(0, len(notices), 2000):
            Notice.insert_many([{"item": i, "kind": k, "for_date": d, "created_at": NOW}
                                for i, k, d in notices[start:start + 2000]]).execute()


def timed(action: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    """The median wall time of `repeat` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def peak_heap(action: Callable[[], Any]) -> float:
    """Peak Python heap growth while `action` runs, in MB."""
    tracemalloc.start()
    action()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1024 / 1024


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(directory: Path, count: int, due_now: int) -> dict[str, Any]:
    config = load_config(write_local_config(directory, 1143, 1025, "bench", "bench",
                                            extra="\n[service]\ndigest = false\n"))
    _, renderer = check_everything(config)
    open_database(config.database_url)
    use_team(config.team.key)  # the rows are the config's team's, as the daemon writes them
    fill(count, due_now, random.Random(count))
    sweeper = Sweeper(config, renderer)
    rss_start = rss_mb()
    due_time, found = timed(lambda: sweeper.due(NOW))
    heap = peak_heap(lambda: sweeper.due(NOW))
    start = time.perf_counter()
    sent = sweeper.run(NOW)
    run_time = time.perf_counter() - start
    idle, again = timed(lambda: sweeper.run(NOW))
    before = rss_mb()
    for _ in range(50):
        sweeper.run(NOW)
    after = rss_mb()

    def open_items():  # a fresh query each time: peewee caches a query's rows
        return Item.select().where(Item.status.in_(OPEN_STATUSES))
    scan, loaded = timed(lambda: len(list(open_items())), repeat=3)  # last: it grows the heap for good
    counted, _ = timed(lambda: open_items().count())
    return {"items": count, "open_items": loaded, "due": len(found), "sent": len(sent), "sent_again": len(again),
            "baseline_load_all_s": scan, "baseline_count_s": counted, "due_s": due_time, "run_s": run_time,
            "idle_s": idle, "heap_peak_mb": heap, "rss_start_mb": rss_start, "rss_before_mb": before,
            "rss_after_50_mb": after, "rss_after_load_all_mb": rss_mb()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000, help="open items (default 100000)")
    parser.add_argument("--due", type=int, default=100, help="items that fall due at the sweep (default 100)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inboxd-bench-sweep-") as tmp:
        small = measure(Path(tmp) / "small", max(args.items // 10, 1), args.due)
        big = measure(Path(tmp) / "big", args.items, args.due)
    # Each due item gets a reminder, a notice and an escalation (its status update folds into the notice).
    wrong = [f"{r['items']} items: {r['sent']} sent, {r['sent_again']} on the second run (expected "
             f"{3 * min(args.due, r['items'])} and 0)" for r in (small, big)
             if r["sent"] != 3 * min(args.due, r["items"]) or r["sent_again"]]
    if args.json:
        print(json.dumps({"small": small, "big": big, "wrong": wrong}, indent=2))
        return 1 if wrong else 0
    print(f"inboxd sweep benchmark: {big['items']} open items (SQLite), {args.due} falling due")
    print(f"baseline, load every open item:  {big['baseline_load_all_s']:.3f} s   (COUNT(*): "
          f"{big['baseline_count_s']:.3f} s)")
    print(f"due (the jobs' queries):         {big['due_s']:.3f} s   {big['due']} mail(s) due")
    verdict = "PASS" if big["run_s"] < GOAL_SECONDS else "MISS"
    print(f"run (send {big['sent']} mail(s)):           {big['run_s']:.3f} s   goal < {GOAL_SECONDS:.0f} s   "
          f"{verdict}")
    verdict = "PASS" if big["idle_s"] < GOAL_SECONDS else "MISS"
    print(f"idle sweep (nothing due):        {big['idle_s']:.3f} s   goal < {GOAL_SECONDS:.0f} s   {verdict}")
    print(f"sweep / load-all:                {100 * big['idle_s'] / big['baseline_load_all_s']:.1f} %")
    print(f"heap peak of due():              {big['heap_peak_mb']:.2f} MB at {big['items']} items, "
          f"{small['heap_peak_mb']:.2f} MB at {small['items']} (both with {big['due']} due)")
    print(f"RSS (max so far):                {big['rss_start_mb']:.1f} MB filled, {big['rss_before_mb']:.1f} after the "
          f"sweeps, {big['rss_after_50_mb']:.1f} after 50 more; {big['rss_after_load_all_mb']:.1f} after load-all")
    for line in wrong:
        print(f"WRONG: {line}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
