"""Failover benchmark (issue 17): which lease, rows or advisory locks, hands a lost worker's mailboxes on faster, safer.

On a throwaway PostgreSQL (tests/postgres.py), three worker processes (plain Python running
`inboxd.leases.keep_share` every RENEW_SECONDS, not the daemon) share 20 mailbox leases, each
through a TCP proxy of its own (tests/tcpproxy.FreezingProxy). Once they hold 7, 7 and 6, the
one holding most is lost, in one of two ways, or the database goes:

  kill:    kill -9 of its process (the kernel closes its connection at once);
  freeze:  its proxy swallows everything from then on and closes nothing (a network that drops
           packets, a frozen machine's connection): the worker lives on, its statements time out;
  restart: PostgreSQL crashes (immediate shutdown) and is started again at once.

Each worker prints every change of what `held()` says (polled every 2 ms) with a time of the
boot clock all processes share, so the bench sees what each worker *believed* and when:

  failover: from the loss until every lease the lost worker held is held by another;
  overlap:  moments from the loss on at which two workers both believed they held the same lease
            (a killed worker believes nothing after its death), counted per lease, with the longest.
            Not before the loss: while the shares settle, a worker gives leases back, and stops
            believing before it sends the DELETE (or unlock), but its poll may say so 2 ms late;
  fenced:   (freeze) from the loss until the lost worker itself stopped believing, and the
            shortest time from that to another worker taking one of its leases;
  moved:    leases held by another worker afterwards (restart: after the crash, every lease
            held again and each share settled; "failover" is then until every lease was held again).

    python bench/failover.py [--trials 10] [--kinds rows,advisory] [--ways kill,freeze,restart] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import statistics
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from inboxd.leases import (  # noqa: E402
    MARGIN_SECONDS, RENEW_SECONDS, TTL_SECONDS, AdvisoryLeases, RowLeases, boot_clock, keep_share)

MAILBOXES = [f"mailbox:team{n:02}" for n in range(20)]
WORKERS = 3
KINDS = {"rows": RowLeases, "advisory": AdvisoryLeases}
GOAL_SECONDS = 10.0
POLL_SECONDS = 0.002  # how often a worker reports what it holds: a change is seen this much late at most


def work(kind: str, url: str, name: str) -> None:
    """A worker: one round every RENEW_SECONDS in a thread; each change of what it holds printed at once."""
    logging.basicConfig(level=logging.ERROR)  # a lost connection's warnings are the point here, not news
    leases = KINDS[kind](url, holder=name)

    def rounds() -> None:
        while True:
            started = time.monotonic()
            keep_share(leases, MAILBOXES)
            time.sleep(max(0.0, RENEW_SECONDS - (time.monotonic() - started)))
    threading.Thread(target=rounds, daemon=True).start()
    believed: frozenset[str] = frozenset()
    while True:
        now, held = boot_clock(), leases.held()
        for lease in sorted(held ^ believed):
            print(f"{now:.4f} {'+' if lease in held else '-'} {lease}", flush=True)
        believed = held
        time.sleep(POLL_SECONDS)


class Worker:
    """A worker process behind a proxy of its own, and what it said it believed."""

    def __init__(self, kind: str, url: str, port: int, name: str) -> None:
        from tcpproxy import FreezingProxy
        self.name, self.proxy = name, FreezingProxy(port)
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, url.replace(f":{port}/", f":{self.proxy.port}/"), name],
            stdout=subprocess.PIPE, text=True)
        self.changes: list[tuple[float, str, bool]] = []  # (when, lease, now held?)
        self.died_at: float | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            when, sign, lease = line.split()
            self.changes.append((float(when), lease, sign == "+"))

    def held(self, at: float | None = None) -> set[str]:
        """What it believed at `at` (now: its last word)."""
        held: set[str] = set()
        if self.died_at is not None and (at is None or at >= self.died_at):
            return held
        for when, lease, gained in list(self.changes):
            if at is not None and when > at:
                break
            (held.add if gained else held.discard)(lease)
        return held

    def intervals(self, end: float) -> dict[str, list[tuple[float, float]]]:
        """Per lease, the spans it believed it held (a killed worker stops believing at its death)."""
        spans: dict[str, list[tuple[float, float]]] = {}
        start: dict[str, float] = {}
        end = min(end, self.died_at or end)
        for when, lease, gained in list(self.changes):
            if when > end:
                break
            if gained:
                start[lease] = when
            elif lease in start:
                spans.setdefault(lease, []).append((start.pop(lease), when))
        for lease, since in start.items():
            spans.setdefault(lease, []).append((since, end))
        return spans

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self.proxy.close()


def overlaps(workers: list[Worker], since: float, end: float) -> tuple[int, float]:
    """How many leases two workers believed they held at one moment from `since` on, and the longest such moment."""
    leases, longest = set(), 0.0
    spans = [{lease: [(max(a, since), b) for a, b in held if b > since] for lease, held in w.intervals(end).items()}
             for w in workers]
    for i, mine in enumerate(spans):
        for theirs in spans[i + 1:]:
            for lease in mine.keys() & theirs.keys():
                for a0, a1 in mine[lease]:
                    for b0, b1 in theirs[lease]:
                        if min(a1, b1) > max(a0, b0):
                            leases.add(lease)
                            longest = max(longest, min(a1, b1) - max(a0, b0))
    return len(leases), longest


def wait_for(condition: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {seconds:g} s: {what}")
        time.sleep(0.005)
    return value


def clean(url: str) -> None:
    """No lease, worker or advisory lock left from the last trial (a frozen session ends at its idle timeout)."""
    import psycopg2
    with closing(psycopg2.connect(url)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM lease; DELETE FROM worker")

            def no_locks() -> bool:
                cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
                return cursor.fetchone()[0] == 0
            wait_for(no_locks, 3 * TTL_SECONDS, "the last trial's advisory locks gone")


def trial(kind: str, way: str, url: str, server: Any) -> dict[str, Any]:
    """Three workers, the one holding most lost (or the database restarted); the figures of one loss."""
    clean(url)
    workers = [Worker(kind, url, server.port, f"w{n}") for n in range(WORKERS)]
    try:
        def shared() -> bool:
            held = [w.held() for w in workers]
            return sorted(map(len, held)) == [6, 7, 7] and set().union(*held) == set(MAILBOXES)
        wait_for(shared, 30, "the workers sharing the 20 leases 7, 7 and 6")
        if way == "restart":
            return across_restart(workers, server, shared)
        victim = max(workers, key=lambda w: len(w.held()))
        others = [w for w in workers if w is not victim]
        lost = victim.held()
        lost_at = boot_clock()
        if way == "kill":
            victim.kill()
            victim.died_at = lost_at
        else:
            victim.proxy.freeze()
        wait_for(lambda: lost <= set().union(*(w.held() for w in others)), 60, "the lost leases held by others")
        taken = {name: min(when for w in others for when, lease, gained in w.changes
                           if lease == name and gained and when > lost_at) for name in lost}
        if way == "freeze":
            wait_for(lambda: not victim.held(), 30, "the frozen worker stopping")
        fenced = {lease: when for when, lease, gained in victim.changes if when > lost_at and not gained}
        time.sleep(0.05)  # the last lines in
        count, longest = overlaps(workers, lost_at, boot_clock())
        return {"failover": max(taken.values()) - lost_at, "overlapping_leases": count, "longest_overlap": longest,
                "moved": len(lost),
                "fenced": max(fenced.values()) - lost_at if way == "freeze" else None,
                # how long before the first takeover of a lease its frozen holder had stopped (< 0: overlap)
                "gap": min(taken[name] - fenced.get(name, lost_at) for name in lost) if way == "freeze" else None}
    finally:
        for worker in workers:
            worker.stop()


def across_restart(workers: list[Worker], server: Any, shared: Any) -> dict[str, Any]:
    """PostgreSQL crashes (immediate shutdown) and starts again: when every lease was held again, by whom."""
    before = {lease: w.name for w in workers for lease in w.held()}
    lost_at = boot_clock()
    server.proc.send_signal(signal.SIGQUIT)
    server.proc.wait()
    with open(server.tmp / "server.log", "ab") as log:
        server.proc = subprocess.Popen(server.proc.args, user="postgres", group="postgres",
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    time.sleep(TTL_SECONDS)  # past every deadline of before the crash
    wait_for(shared, 60, "the workers sharing the 20 leases again")
    end = boot_clock()
    spans = [w.intervals(end) for w in workers]
    held_again = max(uncovered_until([s for w in spans for s in w.get(lease, [])], lost_at) for lease in MAILBOXES)
    after = {lease: w.name for w in workers for lease in w.held()}
    count, longest = overlaps(workers, lost_at, end)
    return {"failover": held_again - lost_at, "overlapping_leases": count, "longest_overlap": longest,
            "fenced": None, "gap": None, "moved": sum(before[lease] != after[lease] for lease in MAILBOXES)}


def uncovered_until(spans: list[tuple[float, float]], since: float) -> float:
    """The last moment after `since` at which none of `spans` covered it (`since` when they always did)."""
    last, reach = since, since
    for start, end in sorted(spans):
        if end <= since:
            continue
        if start > reach:
            last = start
        reach = max(reach, end)
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--kinds", default="rows,advisory")
    parser.add_argument("--ways", default="kill,freeze,restart")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "URL", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        work(*args.worker)
        return
    from postgres import PostgresServer

    from inboxd.models import open_database
    if not PostgresServer.available():
        sys.exit("needs PostgreSQL's server binaries and root (as the tests do)")
    kinds, ways = args.kinds.split(","), args.ways.split(",")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {k: {w: [] for w in ways} for k in kinds}
    with PostgresServer() as server:
        url = server.create_database("inboxd_failover")
        database = open_database(url)
        server_version = database.execute_sql("SHOW server_version").fetchone()[0]
        database.close()
        for way in ways:
            for kind in kinds:
                for _ in range(args.trials):
                    results[kind][way].append(trial(kind, way, url, server))
                    print(f"{way} {kind}: {results[kind][way][-1]}", file=sys.stderr, flush=True)
    overlap = any(r["overlapping_leases"] for ways in results.values() for trials in ways.values() for r in trials)
    if args.json:
        print(json.dumps(results, indent=1))
        sys.exit(1 if overlap else 0)
    print(f"inboxd failover benchmark: {WORKERS} workers, {len(MAILBOXES)} mailbox leases, {args.trials} trial(s) "
          f"each; TTL {TTL_SECONDS:g} s, renewal every {RENEW_SECONDS:g} s, margin {MARGIN_SECONDS:g} s; "
          f"PostgreSQL {server_version}")
    print(" " * 28 + "".join(f"{kind:>22}" for kind in kinds))
    for way in ways:
        for label, key in (("failover p50", "failover"), ("failover max", "failover"),
                           ("overlap leases", "overlapping_leases"), ("longest overlap", "longest_overlap"),
                           ("self-fenced max", "fenced"), ("fence→takeover min", "gap"), ("moved", "moved")):
            if key in ("fenced", "gap") and way != "freeze" or key == "moved" and way != "restart":
                continue
            row = []
            for kind in kinds:
                values = [r[key] for r in results[kind][way] if r[key] is not None]
                if not values:
                    row.append("-")
                elif key == "gap":
                    row.append(f"{min(values):.2f} s")
                elif label.endswith("p50"):
                    row.append(f"{statistics.median(values):.2f} s")
                elif key == "moved":
                    row.append(f"p50 {statistics.median(values):g}, max {max(values)}")
                elif key == "overlapping_leases":
                    row.append(f"{sum(values)} in {sum(v > 0 for v in values)} trial(s)")
                else:
                    row.append(f"{max(values):.2f} s")
            print(f"{way} {label}".ljust(28) + "".join(f"{cell:>22}" for cell in row))
        for kind in kinds:
            worst = max(r["failover"] for r in results[kind][way])
            print(f"  {way}, {kind}: goal ≤ {GOAL_SECONDS:g} s {'PASS' if worst <= GOAL_SECONDS else 'MISS'}; "
                  f"overlap {'0' if not any(r['overlapping_leases'] for r in results[kind][way]) else 'SEEN'}")
    if overlap:
        print("CORRECTNESS FAILED: two workers believed they held one lease at once")
        sys.exit(1)


if __name__ == "__main__":
    main()
