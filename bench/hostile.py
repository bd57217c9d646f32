"""Hostile-headers benchmark: seconds per mail through `Pipeline.process` for each shape of issue 13 (item 4).

Each shape is one request mail with one header blown up, folded into lines as a mail client or an
attacker would: a Subject of 9,000 and of 100,000 `[IT-n]` tags (of items that do not exist, so
every tag would be tried), a To of 100,000 recipients, a Subject and a From name of 50,000 RFC 2047
encoded words, 20,000 `Received:` lines, a References header of 100,000 ids, and 20,000 other
header fields. Each goes through the whole per-mail path — `message.decode` (mail-parser), the
guards, `find_thread`, the rules, the item, its mails into the outbox — on a daemon with a fresh
SQLite database and an in-memory mailbox and SMTP, against a normal mail measured in the same run
(the baseline). The figure is the median of --repeat runs, each a new mail of the same shape.

Also counted, untimed: the thread lookups (`ThreadLookup.item`) each mail made, which the tags
must not multiply. Goal: every shape under one second. A shape that does not become an item, or
that makes more lookups than tags are tried, is WRONG (exit 1); a missed goal prints MISS.

    python bench/hostile.py [--scale 1.0] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from inboxd.clock import FixedClock
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.domain import ItemView
from inboxd.localconfig import write_local_config
from inboxd.outbox import FakeTransport
from inboxd.queries import StoredThreads
from inboxd.source import FakeSource
from inboxd.threads import MAX_TAGS

GOAL_SECONDS = 1.0
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # Monday 10:00 in Berlin
_ids = itertools.count(1)


def folded(words: Iterable[str], separator: str = " ") -> str:
    """Words as one header value folded into lines of about 76 characters."""
    lines, line = [], ""
    for word in words:
        if line and len(line) + len(word) > 74:
            lines.append(line.rstrip())
            line = ""
        line += word + separator
    return "\r\n ".join([*lines, line.rstrip(separator + " ")])


def mail(sender: str, subject: str = "Printer on floor 3 is jammed", to: str = "help@example.org",
         name: str = "Rosa Lind", above: str = "", below: str = "") -> bytes:
    """A plain request with the header lines given above (before From) and below (after Date)."""
    head = (f"{above}From: {name} <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMessage-ID: <hostile-{next(_ids)}@example.org>\r\n{below}")
    return (head + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "The printer on floor 3 says paper jam, but there is no paper in it.\r\n").encode()


def encoded_words(count: int) -> str:
    return folded(f"=?utf-8?q?W=C3=B6rter_{n}_?=" for n in range(count))


def shapes(scale: float = 1.0) -> dict[str, Callable[[str], bytes]]:
    """name -> a maker of one mail of that shape from a sender; `scale` shrinks every count (for tests)."""
    def n(count: int) -> int:
        return max(1, int(count * scale))

    def tags(count: int) -> Callable[[str], bytes]:
        return lambda sender: mail(sender, folded(f"[IT-{100_000 + k}]" for k in range(n(count))) + " printer")

    return {
        "normal mail (baseline)": lambda sender: mail(sender),
        "Subject: 9,000 [IT-n] tags": tags(9_000),
        "Subject: 100,000 [IT-n] tags": tags(100_000),
        "To: 100,000 recipients": lambda sender: mail(
            sender, to=folded((f"user{k}@example.org" for k in range(n(100_000))), ", ")),
        "Subject: 50,000 encoded words": lambda sender: mail(sender, encoded_words(n(50_000))),
        "From name: 50,000 encoded words": lambda sender: mail(sender, name=encoded_words(n(50_000))),
        "20,000 Received lines": lambda sender: mail(sender, above="".join(
            f"Received: from relay{k}.example.net by mx.example.org; Mon, 23 Nov 2026 09:59:00 +0100\r\n"
            for k in range(n(20_000)))),
        "References: 100,000 ids": lambda sender: mail(
            sender, below=f"References: {folded(f'<id{k}@example.org>' for k in range(n(100_000)))}\r\n"),
        "20,000 other header fields": lambda sender: mail(
            sender, below="".join(f"X-Field-{k}: value {k}\r\n" for k in range(n(20_000)))),
    }


class CountingThreads(StoredThreads):
    """The stored thread lookups, counting the item lookups the tags and addresses make."""

    lookups = 0

    def item(self, number: int) -> ItemView | None:
        self.lookups += 1
        return super().item(number)


def measure(scale: float, repeat: int, folder: Path) -> list[dict]:
    config = load_config(write_local_config(folder, 1143, 1025, "inboxd", "secret", None, None, 100,
                                            retry_seconds=1, facilities=("ana@example.org", "bo@example.org")))
    daemon = Daemon(config, clock=FixedClock(NOW), source=FakeSource(), transport=FakeTransport())
    threads = daemon.pipeline.threads = CountingThreads()
    rows = []
    for number, (name, make) in enumerate(shapes(scale).items()):
        seconds, kinds, lookups, size = [], set(), 0, 0
        for run in range(repeat):
            raw = make(f"sender{number}.{run}@example.org")  # a sender each: the flood cap stays out of it
            threads.lookups = 0
            start = time.perf_counter()
            outcome = daemon.pipeline.process(raw, uid=None)
            seconds.append(time.perf_counter() - start)
            kinds.add(outcome.kind)
            lookups, size = max(lookups, threads.lookups), len(raw)
        rows.append({"shape": name, "bytes": size, "seconds": statistics.median(seconds),
                     "outcomes": sorted(kinds), "lookups": lookups})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every count (0.01 for a quick run)")
    parser.add_argument("--repeat", type=int, default=3, help="mails of each shape; the median is shown")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = measure(args.scale, args.repeat, Path(folder))
    baseline = rows[0]["seconds"]
    wrong = [f"{r['shape']}: became {', '.join(r['outcomes'])}, not an item" for r in rows if r["outcomes"] != ["item"]]
    wrong += [f"{r['shape']}: {r['lookups']} item lookups, more than {MAX_TAGS}" for r in rows
              if r["lookups"] > MAX_TAGS]
    if args.json:
        print(json.dumps({"scale": args.scale, "repeat": args.repeat, "goal_seconds": GOAL_SECONDS,
                          "shapes": rows, "wrong": wrong}, indent=2))
        return 1 if wrong else 0
    print(f"inboxd hostile-headers benchmark: Pipeline.process on SQLite, median of {args.repeat}, "
          f"scale {args.scale:g}")
    print(f"{'shape':34} {'size':>11} {'seconds':>9} {'x normal':>9} {'lookups':>8}  goal < {GOAL_SECONDS:g} s")
    for r in rows:
        verdict = "PASS" if r["seconds"] < GOAL_SECONDS else "MISS"
        print(f"{r['shape']:34} {r['bytes'] / 1024:>8.1f} kB {r['seconds']:>9.3f} "
              f"{r['seconds'] / baseline:>9.1f} {r['lookups']:>8}  {verdict}")
    for line in wrong:
        print(f"WRONG: {line}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
