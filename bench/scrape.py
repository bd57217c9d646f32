"""Scrape benchmark: one /metrics scrape over N items and an outbox of 2N mails (SQLite), against a bare
COUNT(*) over the items measured in the same run.

The gauges are read at each scrape (items by status, the outbox's pending and dead mail), so a
scrape costs what those questions cost the database; a scraper asks every 15 s or so. Measured,
each as the median of several runs:

  baseline: `SELECT COUNT(*) FROM item`, the least any question about every item costs;
  scrape:   the text of /metrics as served (prometheus-client's `generate_latest` with the
            daemon's live gauges registered), the queries included;
  healthz:  what /healthz asks (the verdict and the outbox's counts).

    python bench/scrape.py [--items N] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from inboxd.health import Health, look, verdict
from inboxd.metrics import REGISTRY, Live
from inboxd.models import Item, Outbox, db, open_database, team
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

GOAL_SECONDS = 0.1  # a scrape every 15 s may take this much of the database's time
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
STATUSES = ("new", "open", "working", "waiting", "done", "closed")


def fill(count: int, rng: random.Random) -> None:
    """N items over the statuses (most of them closed, as in a tracker a year old) and 2N outgoing mails."""
    items = [{"subject": f"Request {n}", "requester": f"user{n}@example.org", "queue": "default",
              "status": rng.choices(STATUSES, (2, 4, 4, 2, 8, 80))[0], "created_at": NOW - timedelta(days=n % 365),
              "secret": "s"} for n in range(count)]
    mails = [{"kind": "ack", "recipients": ["user@example.org"], "sender": "help@example.org", "subject": "s",
              "message_id": f"<m{n}@bench>", "raw": b"", "created_at": NOW, "next_attempt_at": NOW,
              "status": "pending" if n % 1000 == 0 else "dead" if n % 997 == 0 else "sent"}
             for n in range(2 * count)]
    with db.atomic():
        for start in range(0, count, 500):
            Item.insert_many(items[start:start + 500]).execute()
        for start in range(0, 2 * count, 500):
            Outbox.insert_many(mails[start:start + 500]).execute()


def median(run: Callable[[], object], times: int = 7) -> float:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        run()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        open_database(f"sqlite:///{Path(tmp) / 'inboxd.db'}")
        fill(args.items, random.Random(14))
        health = Health(Path(tmp) / "health.json")
        health.waiting_mail(0)
        live = Live({team(): health})
        REGISTRY.register(live)
        try:
            text = generate_latest(REGISTRY).decode()
            samples = {(s.name, s.labels.get("status")): s.value
                       for family in text_string_to_metric_families(text) for s in family.samples}
            counted = sum(v for (name, _), v in samples.items() if name == "inboxd_items")
            problems = [] if counted == args.items else [f"inboxd_items adds up to {counted}, not {args.items}"]
            figures = {
                "items": args.items,
                "baseline_seconds": median(lambda: Item.select().count()),
                "scrape_seconds": median(lambda: generate_latest(REGISTRY)),
                "healthz_seconds": median(lambda: (verdict(health.status, health.path, datetime.now(UTC)), look())),
                "outbox_pending": samples[("inboxd_outbox_mails", "pending")],
                "problems": problems,
            }
        finally:
            REGISTRY.unregister(live)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"inboxd scrape benchmark: {args.items} items, {2 * args.items} outgoing mails (SQLite)")
        print(f"baseline (COUNT(*) over the items): {figures['baseline_seconds'] * 1000:8.2f} ms")
        goal = "PASS" if figures["scrape_seconds"] < GOAL_SECONDS else "MISS"
        print(f"/metrics scrape:                    {figures['scrape_seconds'] * 1000:8.2f} ms"
              f"   goal < {GOAL_SECONDS * 1000:.0f} ms   {goal}")
        print(f"/healthz:                           {figures['healthz_seconds'] * 1000:8.2f} ms")
        for problem in problems:
            print(f"WRONG: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
