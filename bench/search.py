"""Search benchmark: `inboxd items` filters over N items and their mail (SQLite), against LIKE and
a bare COUNT(*) measured in the same run.

Fills a fresh database (bulk inserts, not timed) with N items from N/3 requesters over a year and
2.5 mails each (the request, the acknowledgement, a reply for half of them), then times, each as
the median of several runs, what `search.matching` returns (rows read, as `items --all` prints
them) and `search.others` (what `item REF` adds):

  baseline: `SELECT COUNT(*) FROM item`, reading every item (what a search that returns nearly all
            of them cannot do better than), and a rare word with LIKE (no index: every mail read);
  searches: one rare word, two words in different mails, a common word, a requester, a
            requester and a word, a tag, the last 30 days, the requester's other items;
  index:    migration 10 over the mail stored before it, and the cost per stored mail of keeping
            the index (triggers) against the same inserts without it.

    python bench/search.py [--items N] [--json]
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
from typing import TypeVar

from inboxd import search
from inboxd.models import SEARCH_INDEX, Item, Message, apply_migrations, create, db, open_database
from inboxd.search import Filters

GOAL_SECONDS = 1.0  # a search over 100,000 items, as `stats` (issue 16); one that returns nearly every item
# is compared with reading every item instead
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
STATUSES = ("new", "open", "working", "waiting", "done", "declined")
TAGS = ("printer", "print", "access", "vip", "onboarding")
T = TypeVar("T")
ACK = ("Hello,\n\nwe have your request and will answer within one business day. Reply to this mail to add "
       "anything; keep the reference in the subject.\n\nIT Help")


def vocabulary(rng: random.Random) -> tuple[list[str], list[str]]:
    """Words in Zipf's proportions, and 2,000 paragraphs of 30-60 of them: the mails' text."""
    words = ["printer", "screen", "password", "vpn", "laptop", "mouse", "toner", "access", "account", "meeting"]
    words += ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 10))) for _ in range(4990)]
    weights = [1 / rank for rank in range(1, len(words) + 1)]
    paragraphs = [" ".join(rng.choices(words, weights, k=rng.randint(30, 60))) for _ in range(2000)]
    return words, paragraphs


def fill(count: int, rng: random.Random) -> list[str]:
    """N items and their mail; item n's request names asset Kn, a word no other mail has. The paragraphs used."""
    _, paragraphs = vocabulary(rng)
    people = max(1, count // 3)
    items, mails = [], []
    for n in range(1, count + 1):
        created = NOW - timedelta(minutes=525_600 * (count - n) // count)
        subject = f"Request {n}: " + " ".join(rng.choice(paragraphs).split()[:4])
        items.append({"id": n, "subject": subject, "requester": f"user{rng.randrange(people)}@example.org",
                      "queue": "default", "status": rng.choices(STATUSES, (2, 4, 4, 2, 80, 8))[0],
                      "tags": rng.sample(TAGS, rng.randint(0, 2)), "created_at": created, "secret": "s"})
        mail = {"message_id": f"<in{n}@bench>", "direction": "in", "item": n, "subject": subject,
                "body": f"{rng.choice(paragraphs)}\n\nAsset K{n}.\n\n{rng.choice(paragraphs)}", "created_at": created}
        mails += [mail, mail | {"message_id": f"<ack{n}@bench>", "direction": "out", "outcome": "ack",
                                "subject": f"[IT-{n}] We have your request: {subject}", "body": ACK}]
        if n % 2:
            mails.append(mail | {"message_id": f"<re{n}@bench>", "outcome": "reply", "body": rng.choice(paragraphs)})
    with db.atomic():
        for start in range(0, len(items), 500):
            Item.insert_many(items[start:start + 500]).execute()
        for start in range(0, len(mails), 300):
            Message.insert_many(mails[start:start + 300]).execute()
    return paragraphs


def without_index() -> None:
    """The database as schema 9 left it: no search table, no triggers."""
    for name in ("insert", "update", "delete"):
        db.execute_sql(f"DROP TRIGGER IF EXISTS {SEARCH_INDEX}_{name}")
    db.execute_sql(f"DROP TABLE IF EXISTS {SEARCH_INDEX}")
    db.execute_sql("DELETE FROM schemaversion WHERE version = 10")


def median(run: Callable[[], T], times: int = 5) -> tuple[float, T]:
    """The median time of `run`, and what it returned the last time."""
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        result = run()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent), result


def store_mails(count: int, first: int, paragraphs: list[str]) -> float:
    """Seconds per mail to store `count` requests as the pipeline does (one INSERT each, 100 per transaction)."""
    start = time.perf_counter()
    for batch in range(0, count, 100):
        with db.atomic():
            for n in range(first + batch, first + batch + 100):
                create(Message, message_id=f"<new{n}@bench>", direction="in", item=1, subject=f"Question {n}",
                       body=f"{paragraphs[n % 2000]}\n\nAsset Q{n}.\n\n{paragraphs[n * 7 % 2000]}", created_at=NOW)
    return (time.perf_counter() - start) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = args.items
    rng = random.Random(16)
    with tempfile.TemporaryDirectory() as tmp:
        database = open_database(f"sqlite:///{Path(tmp) / 'inboxd.db'}")
        without_index()
        paragraphs = fill(n, rng)
        mails = Message.select().count()
        incoming = Message.select().where(Message.direction == "in").count()
        start = time.perf_counter()
        apply_migrations(database)  # migration 10: the index of the mail already stored
        migration = time.perf_counter() - start
        target = Item.get_by_id(n // 2)
        word = target.subject.split()[2]  # a word of its subject, common or not
        checks: dict[str, tuple[Filters, Callable[[list[Item]], bool]]] = {
            "rare word (one item)": (Filters(text=f"K{n // 2}", open_only=False),
                                     lambda r: [i.id for i in r] == [n // 2]),
            "two words, in different mails": (Filters(text=f"K{n // 2} {word}", open_only=False),
                                              lambda r: [i.id for i in r] == [n // 2]),
            "common word (printer)": (Filters(text="printer", open_only=False), lambda r: len(r) > n // 2),
            "requester": (Filters(requester=target.requester, open_only=False),
                          lambda r: target.id in [i.id for i in r]),
            "requester and a word": (Filters(requester=target.requester, text=word, open_only=False),
                                     lambda r: target.id in [i.id for i in r]),
            "tag (print, not printer)": (Filters(tag="print", open_only=False),
                                         lambda r: bool(r) and all("print" in i.tags for i in r)),
            "last 30 days": (Filters(since=NOW - timedelta(days=30), open_only=False),
                             lambda r: bool(r) and all(i.created_at >= NOW - timedelta(days=30) for i in r)),
        }
        problems: list[str] = []
        seconds: dict[str, float] = {}
        for label, (filters, right) in checks.items():
            seconds[label], found = median(lambda f=filters: list(search.matching(f)))  # type: ignore[misc]
            if not right(found):
                problems.append(f"{label}: {len(found)} item(s), not what was asked")
        seconds["others (item REF)"], theirs = median(lambda: search.others(target.id, target.requester))
        if target.id in [i.id for i in theirs] or len(theirs) > search.OTHERS_SHOWN:
            problems.append("others: the item itself, or more than it shows")
        count_seconds, _ = median(lambda: Item.select().count())
        load_seconds, _ = median(lambda: list(Item.select()), times=3)
        engine, search.engine = search.engine, lambda: "like"  # type: ignore[assignment]
        like_seconds, found = median(lambda: list(search.matching(checks["rare word (one item)"][0])), times=3)
        search.engine = engine  # type: ignore[method-assign]
        if [i.id for i in found] != [n // 2]:
            problems.append("LIKE found other items than the index")
        with_index = min(store_mails(2000, 0, paragraphs), store_mails(2000, 4000, paragraphs))
        for name in ("insert", "update", "delete"):
            db.execute_sql(f"DROP TRIGGER {SEARCH_INDEX}_{name}")
        bare = min(store_mails(2000, 8000, paragraphs), store_mails(2000, 12000, paragraphs))
    figures = {"items": n, "mails": mails, "baseline_count_seconds": count_seconds,
               "baseline_load_seconds": load_seconds, "like_seconds": like_seconds,
               "searches_seconds": seconds, "migration_seconds": migration, "incoming_mails": incoming,
               "store_mail_us": {"indexed": with_index * 1e6, "bare": bare * 1e6}, "problems": problems}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"inboxd search benchmark: {n} items, {mails} mails (SQLite, FTS5)")
        print(f"baseline: COUNT(*) over the items      {count_seconds * 1000:9.2f} ms")
        print(f"baseline: load every item               {load_seconds * 1000:9.2f} ms")
        print(f"baseline: a rare word with LIKE         {like_seconds * 1000:9.2f} ms   (every mail read)")
        for label, spent in seconds.items():
            goal = "PASS" if spent < GOAL_SECONDS else "MISS"
            print(f"{label + ':':<40}{spent * 1000:9.2f} ms   " + (
                f"{spent / load_seconds:.2f} x reading every item" if label.startswith("common") else
                f"goal < {GOAL_SECONDS:.0f} s   {goal}"))
        print(f"migration 10 ({incoming} mails in):{migration:13.2f} s")
        print(f"storing an incoming mail: {with_index * 1e6:.0f} us with the index, {bare * 1e6:.0f} us without "
              f"(+{(with_index - bare) * 1e6:.0f} us)")
        for problem in problems:
            print(f"WRONG: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
