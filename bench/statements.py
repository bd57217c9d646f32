"""What the database does per request (issue 17): statements by kind, rows written, indexes used, bytes kept.

The real daemon (`inboxd.daemon.Daemon`: its ingest, pipeline, outbox and sweep) on a FixedClock, an
in-memory mail source and a fake SMTP transport, on SQLite and on a throwaway PostgreSQL
(tests/postgres.py). Every statement the driver is given is counted, at the cursor (BEGIN and COMMIT
included), by phase of a request's life:

  new request   the intake of a new mail: its item, events, acknowledgement and team mail enqueued
  #take         the owner takes it, replying to the mail inboxd sent them
  follow-up     the requester writes again, replying to the acknowledgement
  #done         the owner closes it (every other request)
  delivery      after each phase above: each outbox row it queued sent and recorded (`OutboxSender.drain`)
  sweep         the jobs' run over the open items (one with what fell due in the fill, then one idle)

The shipped rules and templates, announcements on (as `inboxd init` gives them), the field-like mails of
bench/ingest.py. The fill runs the same rounds (`--batch` requests each, an hour apart) until `--requests`
have lived through them; then ANALYZE, and one more round is counted. Rows: each table's rows before and
after a phase. Indexes: the plan of each distinct statement of the counted phases (EXPLAIN on PostgreSQL,
EXPLAIN QUERY PLAN on SQLite, with the statement's own values); a full scan of a table that grows with the
requests is flagged SCAN. SQLite's plans are shown as inboxd runs them (it never runs ANALYZE) and after
ANALYZE where they differ. Bytes: the database's growth over the fill, per request (tables and indexes).

    python bench/statements.py [--requests 2000] [--batch 100] [--backends sqlite,postgres] [--json]
    python bench/statements.py --requests 40 --batch 20 --json          # what CI runs (tests/test_bench.py)
"""

from __future__ import annotations

import argparse
import email
import json
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from inboxd.clock import FixedClock  # noqa: E402
from inboxd.config import load_config  # noqa: E402
from inboxd.daemon import Daemon  # noqa: E402
from inboxd.domain import OPEN_STATUSES  # noqa: E402
from inboxd.localconfig import write_local_config  # noqa: E402
from inboxd.models import Item, Outbox, db  # noqa: E402
from inboxd.outbox import FakeTransport  # noqa: E402
from inboxd.source import FakeSource  # noqa: E402
from ingest import make_field_mails  # noqa: E402

from conversation_helpers import reply  # noqa: E402

START = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # Monday 08:00 in Berlin
TABLES = ("item", "message", "event", "outbox", "notice", "silence", "datemove", "absence", "mailboxstate", "jobrun")
GROWING = {"item", "message", "event", "outbox", "notice", "silence", "datemove", "jobrun"}  # with the requests
KINDS = ("SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK")
PHASES = ("new request", "new request: delivery", "#take", "#take: delivery", "follow-up", "follow-up: delivery",
          "#done", "#done: delivery")
TABLE_OF = re.compile(r'^\s*(?:INSERT INTO|UPDATE|DELETE FROM)\s+"?(\w+)"?|\bFROM\s+"?(\w+)"?', re.I)


class Tally:
    """Every statement given to the driver while `on`, with its values: (sql, params)."""

    def __init__(self) -> None:
        self.on = False
        self.seen: list[tuple[str, tuple[Any, ...]]] = []

    def install(self, database: Any) -> None:
        """Count at `database`'s cursors: peewee's statements and its BEGIN and COMMIT alike."""
        make = database.cursor
        database.cursor = lambda *args, **kwargs: _Counted(make(*args, **kwargs), self)

    @contextmanager
    def counting(self) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
        self.seen, self.on = [], True
        try:
            yield self.seen
        finally:
            self.on = False


class _Counted:
    """A driver cursor that tells the tally what it executes."""

    def __init__(self, cursor: Any, tally: Tally) -> None:
        self._cursor, self._tally = cursor, tally

    def execute(self, sql: str, *params: Any) -> Any:
        if self._tally.on:
            self._tally.seen.append((sql, tuple(params[0]) if params and params[0] else ()))
        return self._cursor.execute(sql, *params)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def kind_of(sql: str) -> str:
    """SELECT, INSERT, … BEGIN, COMMIT: the statement's first word, or "other"."""
    word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return word if word in KINDS else "other"


def table_of(sql: str) -> str:
    """The table a statement writes, or the first it reads from."""
    match = TABLE_OF.search(sql)
    return (match[1] or match[2]).lower() if match else ""


def row_counts() -> dict[str, int]:
    """Each table's rows now."""
    return {table: db.execute_sql(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for table in TABLES}


class Life:
    """The daemon on fakes, and a round of requests through it: new, #take, follow-up, #done, each delivered."""

    def __init__(self, work: Path, url: str, worker: str) -> None:
        path = write_local_config(work, 1143, 1025, "inboxd", "secret", batch_size=100, retry_seconds=1,
                                  facilities=("ana@example.org", "bo@example.org"))
        path.write_text(path.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{url}"'))
        self.clock = FixedClock(START)
        self.daemon = Daemon(load_config(path), clock=self.clock, source=FakeSource(), transport=FakeTransport())
        self.daemon.worker = worker  # one of several workers claims each sweep (PostgreSQL)
        self.uidvalidity = self.daemon.source.open()
        self.tally = Tally()
        self.tally.install(db.obj)

    def ingest(self, mails: list[bytes]) -> None:
        self.daemon.source.add(mails)
        self.daemon.ingest(self.uidvalidity)

    def deliver(self) -> None:
        self.daemon.sender.drain()

    def round(self, mails: list[bytes], measure: Callable[[str, Callable[[], object], int], None]) -> None:
        """One batch of requests through their life; `measure(phase, step, requests)` runs each step."""
        first = (Item.select(Item.id).order_by(Item.id.desc()).scalar() or 0) + 1
        measure("new request", lambda: self.ingest(mails), len(mails))
        measure("new request: delivery", self.deliver, len(mails))
        items = list(Item.select().where(Item.id >= first).order_by(Item.id))
        sent: dict[int, tuple[Outbox | None, Outbox | None]] = {}  # item id -> (ack, first mail to a member)
        for row in Outbox.select().where(Outbox.item.in_([i.id for i in items])).order_by(Outbox.id):
            ack, member = sent.get(row.item_id, (None, None))
            if row.kind == "ack" and ack is None:
                ack = row
            elif row.kind in ("new_request", "assigned") and member is None:
                member = row
            sent[row.item_id] = (ack, member)
        lives = [(item, *sent[item.id]) for item in items if None not in sent.get(item.id, (None, None))]
        mail = {row.id: email.message_from_bytes(bytes(row.raw)) for _, ack, to in lives for row in (ack, to)}
        takes = [reply(mail[to.id], to.recipients[0], "#take\nI'll look at it today.") for _, _, to in lives]
        measure("#take", lambda: self.ingest(takes), len(takes))
        measure("#take: delivery", self.deliver, len(takes))
        asks = [reply(mail[ack.id], ack.recipients[0], "Any news? It still does not work here.")
                for _, ack, _ in lives]
        measure("follow-up", lambda: self.ingest(asks), len(asks))
        measure("follow-up: delivery", self.deliver, len(asks))
        dones = [reply(mail[to.id], to.recipients[0], "#done replaced the cable") for _, _, to in lives[::2]]
        measure("#done", lambda: self.ingest(dones), len(dones))
        measure("#done: delivery", self.deliver, len(dones))
        self.clock.advance(timedelta(hours=1))


def summary(seen: list[tuple[str, tuple[Any, ...]]], rows: dict[str, int], requests: int, mails: int = 0
            ) -> dict[str, Any]:
    """Statements by kind and rows added by table, per request (a phase of `requests`)."""
    kinds = Counter(kind_of(sql) for sql, _ in seen)
    updates = Counter(table_of(sql) for sql, _ in seen if kind_of(sql) in ("UPDATE", "DELETE"))
    per = max(requests, 1)
    return {"requests": requests, "statements": round(len(seen) / per, 2),
            "by_kind": {kind: round(n / per, 2) for kind, n in sorted(kinds.items())},
            "rows_added": {table: round(n / per, 2) for table, n in rows.items() if n},
            "updates_by_table": {table: round(n / per, 2) for table, n in sorted(updates.items())},
            "mails_queued": round(mails / per, 2)}


def per(phase: dict[str, Any], count: float) -> dict[str, Any]:
    """A phase's figures (counted for one run) per one of `count` (the mails a sweep queued)."""
    count = max(count, 1)

    def each(values: dict[str, float]) -> dict[str, float]:
        return {key: share for key, value in values.items() if (share := round(value / count, 2))}
    return phase | {"requests": count, "statements": round(phase["statements"] / count, 2),
                    "by_kind": each(phase["by_kind"]), "rows_added": each(phase["rows_added"]),
                    "updates_by_table": each(phase["updates_by_table"]),
                    "mails_queued": round(phase["mails_queued"] / count, 2), "ms": round(phase["ms"] / count, 2)}


def explain(sql: str, params: tuple[Any, ...], postgres: bool) -> list[str]:
    """The plan of one statement with its own values, run by no one (EXPLAIN executes nothing)."""
    if postgres:
        (document,), = db.execute_sql("EXPLAIN (FORMAT JSON) " + sql, params).fetchall()
        rows = pg_plan((json.loads(document) if isinstance(document, str) else document)[0]["Plan"])
    else:
        rows = [row[3] for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql, params)]
    return [line if len(line := re.sub(r"\s*\n\s*", " ", row)) <= 200 else line[:199] + "…" for row in rows]


def pg_plan(node: dict[str, Any], depth: int = 0) -> list[str]:
    """PostgreSQL's plan as its text format words it, a line per node and condition (a value's newlines kept in)."""
    name = node["Node Type"] + (" Backward" if node.get("Scan Direction") == "Backward" else "") \
        + (f" using {node['Index Name']}" if "Index Name" in node else "")
    if "Relation Name" in node:
        name += f" on {node['Relation Name']}" + (f" {node['Alias']}" if node.get("Alias", node["Relation Name"])
                                                  != node["Relation Name"] else "")
    indent = "  " * depth
    lines = [indent + ("-> " if depth else "") + name]
    for key in ("Index Cond", "Recheck Cond", "Merge Cond", "Hash Cond", "Join Filter", "Filter", "Sort Key"):
        if key in node:
            value = node[key] if isinstance(node[key], str) else ", ".join(node[key])
            lines.append(f"{indent}   {key}: {value}")
    for child in node.get("Plans", []):
        lines += pg_plan(child, depth + 1)
    return lines


def scans(sql: str, plan: list[str], postgres: bool) -> list[str]:
    """The tables that grow with the requests which this plan reads whole (peewee names them t1, t2…)."""
    alias = {short: table for table, short in re.findall(r'"(\w+)" AS "(\w+)"', sql)}
    pattern = r"Seq Scan on (\w+)" if postgres else r"^\s*SCAN (\w+)"
    found = {alias.get(m[1], m[1]) for line in plan if (m := re.search(pattern, line))}
    return sorted(found & GROWING)


def plans(phases: dict[str, list[tuple[str, tuple[Any, ...]]]], postgres: bool) -> list[dict[str, Any]]:
    """Each distinct SELECT, INSERT, UPDATE or DELETE of the counted phases: where it ran, how often, its plan."""
    found: dict[str, dict[str, Any]] = {}
    for phase, seen in phases.items():
        for sql, params in seen:
            if kind_of(sql) not in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                continue
            entry = found.setdefault(sql, {"sql": sql, "phases": Counter()})
            entry["params"] = params  # the last values: the idle sweep's, the steady state's
            entry["phases"][phase] += 1
    out = []
    for entry in found.values():
        plan = explain(entry["sql"], entry["params"], postgres)
        out.append({"sql": entry["sql"], "table": table_of(entry["sql"]), "kind": kind_of(entry["sql"]),
                    "phases": dict(entry["phases"]), "plan": plan, "scans": scans(entry["sql"], plan, postgres)})
    return out


def size_bytes(postgres: bool) -> dict[str, int]:
    """Bytes each table holds with its indexes (PostgreSQL: with TOAST; SQLite: pages in use, by dbstat)."""
    if postgres:
        return {t: db.execute_sql("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0] for t in TABLES}
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = dict(db.execute_sql("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
    indexes = db.execute_sql("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'").fetchall()
    sizes = {t: pages.get(t, 0) for t in TABLES}
    for index, table in indexes:
        if table in sizes:
            sizes[table] += pages.get(index, 0)
    sizes["message_search (FTS5)"] = sum(v for k, v in pages.items() if k.startswith("message_search"))
    return sizes


def one_backend(name: str, url: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    postgres = name == "postgres"
    life = Life(work, url, "bench:1:0" if postgres else "")
    mails = make_field_mails(args.requests + 2 * args.batch, name)
    empty = size_bytes(postgres)

    def quietly(phase: str, step: Callable[[], object], requests: int) -> None:
        step()

    for start in range(0, args.requests, args.batch):
        life.round(mails[start:start + args.batch], quietly)
    grown = size_bytes(postgres)
    lived = row_counts()
    unanalysed = {}
    if not postgres:  # inboxd never runs ANALYZE on SQLite: the plans it gets are these
        probe: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
        life.round(mails[args.requests:args.requests + args.batch // 2], lambda p, s, n: _probe(life, probe, p, s))
        unanalysed = {entry["sql"]: entry["plan"] for entry in plans(probe, postgres)}
    db.execute_sql("ANALYZE")

    phases: dict[str, dict[str, Any]] = {}
    seen_by_phase: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}

    def measured(phase: str, step: Callable[[], object], requests: int) -> None:
        before, queued = row_counts(), Outbox.select().count()
        with life.tally.counting() as seen:
            began = time.perf_counter()
            step()
            spent = time.perf_counter() - began
        after = row_counts()
        phases[phase] = summary(seen, {t: after[t] - before[t] for t in TABLES}, requests,
                                Outbox.select().count() - queued) | {"ms": round(spent * 1000 / max(requests, 1), 2)}
        seen_by_phase[phase] = list(seen)

    life.round(mails[args.requests + args.batch:], measured)
    life.clock.advance(timedelta(days=2))  # the fill's promised dates come: reminders, notices, escalations
    measured("sweep: a mail it queues", life.daemon.sweep, 1)
    due = phases["sweep: a mail it queues"]["mails_queued"]
    phases["sweep: a mail it queues"] = per(phases["sweep: a mail it queues"], due)
    measured("sweep mail: delivery", life.deliver, 1)
    phases["sweep mail: delivery"] = per(phases["sweep mail: delivery"], due)
    for _ in range(50):  # each job sends at most 500 a run: the rest go out at the next minutes
        life.clock.advance(timedelta(minutes=1))
        if not life.daemon.sweep():
            break
        life.deliver()
    life.clock.advance(timedelta(minutes=1))
    measured("sweep, idle: a run", life.daemon.sweep, 1)
    phases["sweep, idle: a run"]["open_items"] = Item.select().where(Item.status.in_(OPEN_STATUSES)).count()
    found = plans(seen_by_phase, postgres)
    for entry in found:
        before = unanalysed.get(entry["sql"])
        if before is not None and before != entry["plan"]:
            entry["plan_as_run"], entry["scans_as_run"] = before, scans(entry["sql"], before, postgres)
    requests = lived["item"]
    return {"backend": name, "requests_filled": requests, "phases": phases, "plans": found,
            "bytes_per_request": {t: round((grown[t] - empty[t]) / requests) for t in grown
                                  if grown[t] != empty[t]},
            "bytes_per_request_total": round(sum(grown.values()) - sum(empty.values())) // requests,
            "rows_per_request": {t: round(n / requests, 2) for t, n in lived.items() if n and t in GROWING}}


def _probe(life: Life, probe: dict[str, list[tuple[str, tuple[Any, ...]]]], phase: str, step: Callable[[], object]
           ) -> None:
    with life.tally.counting() as seen:
        step()
    probe[phase] = list(seen)


def short(sql: str) -> str:
    """A statement for a line: a long column list as …, the rest cut at 200 characters."""
    columns = re.match(r"SELECT (.*?) FROM ", sql)
    if columns and columns[1].count(",") >= 3:
        sql = "SELECT … FROM " + sql[columns.end():]
    return sql if len(sql) <= 200 else sql[:199] + "…"


def show(result: dict[str, Any]) -> None:
    name, phases = result["backend"], result["phases"]
    print(f"\n{name}: {result['requests_filled']} requests lived through before the counted round (then ANALYZE)")
    print("per request in its phase (the sweep's: per mail it queues, and per run when idle); ms: wall, in process")
    print(f"{'phase':26} {'stmts':>6} " + " ".join(f"{k[:6]:>6}" for k in KINDS[:6]) + "  rows added; UPDATE/DELETE")
    for phase, p in phases.items():
        kinds = " ".join(f"{p['by_kind'].get(k, 0):6g}" for k in KINDS[:6])
        other = sum(v for k, v in p["by_kind"].items() if k not in KINDS[:6])
        rows = ", ".join(f"{t} +{n:g}" for t, n in p["rows_added"].items())
        updates = ", ".join(f"{t} {n:g}" for t, n in p["updates_by_table"].items())
        extra = f"; savepoints etc. {other:g}" if other else ""
        over = f" (over {p['open_items']} open items)" if "open_items" in p else ""
        print(f"{phase:26} {p['statements']:6g} {kinds}  {rows or '-'}; UPDATE/DELETE: {updates or '-'}; "
              f"mails queued {p['mails_queued']:g}{extra}; {p['ms']:g} ms{over}")
    print(f"\nbytes per request (tables with their indexes, over the fill): {result['bytes_per_request_total']:,}")
    print("  " + ", ".join(f"{t} {b:,}" for t, b in sorted(result["bytes_per_request"].items(), key=lambda x: -x[1])))
    print("rows per request kept: " + ", ".join(f"{t} {n:g}" for t, n in result["rows_per_request"].items()))
    print(f"\nplans ({name}; SCAN = a table that grows, read whole):")
    for entry in result["plans"]:
        if entry["kind"] == "INSERT" and not entry["scans"] and not entry.get("plan_as_run"):
            continue  # an INSERT of VALUES reads nothing
        where = ", ".join(f"{phase} ×{n}" for phase, n in entry["phases"].items())
        flag = f"  SCAN {', '.join(entry['scans'])}" if entry["scans"] else ""
        print(f"- [{where}]{flag}\n    {short(entry['sql'])}")
        for line in entry["plan"]:
            print(f"      {line}")
        if entry.get("plan_as_run"):
            flag = f"  SCAN {', '.join(entry['scans_as_run'])}" if entry["scans_as_run"] else ""
            print(f"    as inboxd runs it (no ANALYZE):{flag}")
            for line in entry["plan_as_run"]:
                print(f"      {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests lived through before the counted round")
    parser.add_argument("--batch", type=int, default=100, help="requests per round (an hour of the clock each)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="inboxd-statements-") as tmp, ExitStack() as stack:
        for name in args.backends.split(","):
            work = Path(tmp) / name
            if name == "postgres":
                from postgres import PostgresServer
                if not PostgresServer.available():
                    raise SystemExit("postgres: PostgreSQL's server binaries are not installed, or not root")
                url = stack.enter_context(PostgresServer()).create_database("inboxd_statements")
            else:
                url = "sqlite:///inboxd.db"
            results.append(one_backend(name, url, work, args))
            db.close()
            if not args.json:
                show(results[-1])
    if args.json:
        print(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
