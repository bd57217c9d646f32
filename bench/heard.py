"""The delivery's record per mail, with and without noting that the requester heard from us (`Silences.heard`).

Since issue 16 each mail the outbox records also asks for its item's requester and last word and,
for a mail to the requester, writes `heard_at` (and a `Silence` row when the wait ran over).
This times `outbox._mark_sent` for M mails to requesters, in transactions of 50 as the delivery
records them, on a SQLite database of N items (bench/stats.py's year), with the silences and,
in the same run as the baseline, without.

    python bench/heard.py [--items N] [--mails M]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from stats import NOW, fill

from inboxd.config import load_config
from inboxd.localconfig import write_local_config
from inboxd.models import Item, Outbox, db, open_database, write_transaction
from inboxd.outbox import _mark_sent
from inboxd.tracker import Silences

BATCH = 50


def pending(count: int, rng: random.Random) -> list[Outbox]:
    """M pending status updates, each to a random open item's requester (closed items get no such mail)."""
    open_items = [item for item in Item.select().where(Item.status == "open")]
    rows = []
    for n in range(count):
        item = rng.choice(open_items)
        rows.append(Outbox.create(item=item.id, kind="status_update", recipients=[item.requester],
                                  sender="help@example.org", subject="", message_id=f"<heard-{n}-{rng.random()}@b>",
                                  raw=b"", recipient=item.requester, next_attempt_at=NOW, created_at=NOW))
    return rows


def timed(rows: list[Outbox], silences: Silences | None, start: datetime) -> float:
    """Microseconds per recorded mail, the first recorded at `start`, one a second."""
    started, moment = time.perf_counter(), start
    for start in range(0, len(rows), BATCH):
        with write_transaction():
            for row in rows[start:start + BATCH]:
                moment += timedelta(seconds=1)
                _mark_sent(row, "", moment, silences)
    return 1e6 * (time.perf_counter() - started) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--mails", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = load_config(write_local_config(Path(folder), 1143, 1025, "inboxd", "secret"))
        open_database(config.database_url)
        rng = random.Random(1)
        fill(args.items, rng, config.calendar, config.service.update_every)
        silences = Silences(config.calendar, config.service.update_every)
        baseline = timed(pending(args.mails, rng), None, NOW)
        heard = timed(pending(args.mails, rng), silences, NOW)  # most heard a day or two before
        # Two weeks later: each item's first mail ends a silence and writes a Silence row (the calendar's sums).
        silent = timed(pending(args.mails, rng), silences, NOW + timedelta(days=14))
        db.close()
    print(f"{args.mails} mails recorded over {args.items} items, µs per mail:")
    print(f"  baseline (no silences)       {baseline:8.0f}")
    print(f"  heard, no silence            {heard:8.0f}   (+{heard - baseline:.0f})")
    print(f"  heard, ending a silence      {silent:8.0f}   (+{silent - baseline:.0f})")


if __name__ == "__main__":
    main()
