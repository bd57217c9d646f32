"""Scale benchmark (issue 17): 20 mailboxes, one PostgreSQL database, 1, 2 and 4 `inboxd run` workers.

For each worker count, on a fresh database (migrated first with `inboxd migrate --team M01`, as a deployment would): the workers start,
each from a folder of its own, and once they share the 20 mailboxes fairly a steady stream of requests
is APPENDed round the mailboxes (`--rate` a second for `--seconds`). With two workers or more, the one
holding most mailboxes is killed (SIGKILL to its process group: its delivery processes too, as a
machine dying) halfway through the stream. Figures:

  requests/s:  the requests over the time from the first APPEND to the last acknowledgement;
  latency:     APPEND -> acknowledgement in the SMTP capture (polled every 20 ms), of the mails sent
               3 s or more before the kill (steady state): p50, p95, max;
  failover:    from the kill until each of its mailboxes is leased to another live worker (p50, max
               over those mailboxes, polled every 100 ms);
  recovered:   from the kill until each of its mailboxes had a mail appended after the kill
               acknowledged (p50, max): the mailbox served again, not only leased;
  PG sessions: the database's sessions once the workers share the mailboxes (every worker's and
               delivery process's), before the stream;
  lost, duplicate items, duplicate acknowledgements: counted in the database and the capture once
               every request was acknowledged (or 120 s passed).

    python bench/scale.py [--workers 1,2,4] [--mailboxes 20] [--rate 10] [--seconds 30] [--freeze] [--json]

--freeze stops the worker with SIGSTOP instead (a machine frozen, or cut off: its database sessions
and their locks stay open on the server), and lets it go on (SIGCONT) once the stream is acknowledged.

Needs root, Dovecot and PostgreSQL's server binaries (as the tests do).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import make_mail, write_config  # noqa: E402
from postgres import PostgresServer  # noqa: E402

from inboxd.config import load_teams  # noqa: E402
from inboxd.leases import RENEW_SECONDS  # noqa: E402
from inboxd.models import Item, Lease, Worker, open_database  # noqa: E402
from inboxd.servers import SmtpCapture  # noqa: E402
from inboxd.servers.imap import DovecotServer  # noqa: E402
from inboxd.workers import lease_name, roster  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEAM = """[team]\nname = "Team {n}"\naddress = "m{n:02}@example.org"\nref_prefix = "M{n:02}"\n
[mailbox]\nuser = "m{n:02}"\n"""
ACK = "We have your request: "
STEADY_MARGIN_SECONDS = 3.0  # a mail appended this close to the kill may wait for the failover: not steady state


def deployment(folder: Path, mailboxes: int, imap_port: int, smtp_port: int, url: str) -> Path:
    """config.toml on PostgreSQL and teams.d/m01.toml…: one team per mailbox user."""
    folder.mkdir()
    path = write_config(folder, imap_port=imap_port, smtp_port=smtp_port, imap_user="m01")
    path.write_text(path.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{url}"')
                    .replace('address = "help@example.org"\n', ""))  # what the teams share: no alias of its own
    (folder / "teams.d").mkdir()
    for n in range(1, mailboxes + 1):
        (folder / "teams.d" / f"m{n:02}.toml").write_text(TEAM.format(n=n))
    return path


STARTED: list[subprocess.Popen] = []  # every inboxd the bench started: none outlives it, even when it fails


def inboxd(config: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
    STARTED.append(subprocess.Popen([sys.executable, "-m", "inboxd.cli", "--config", str(config), *args],
                                    stdout=out, stderr=subprocess.STDOUT, env=env, cwd=config.parent,
                                    start_new_session=True))
    return STARTED[-1]


def wait_for(condition: Any, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"scale: not within {seconds:.0f} s: {what}")
        time.sleep(0.1)


class Acks(threading.Thread):
    """Polls the capture every 20 ms: when each request's subject was first acknowledged, and how often."""

    def __init__(self, capture: SmtpCapture) -> None:
        super().__init__(daemon=True)
        self.capture, self.seen, self.first, self.count = capture, 0, {}, Counter()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            mails, now = self.capture.messages, time.time()
            for mail in mails[self.seen:]:
                subject = str(email.message_from_bytes(mail.data, policy=email.policy.default)["Subject"])
                if ACK in subject:
                    key = subject.split(ACK, 1)[1]
                    self.first.setdefault(key, now)
                    self.count[key] += 1
            self.seen = len(mails)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def one_count(workers: int, args: argparse.Namespace, pg: PostgresServer, box: DovecotServer,
              capture: SmtpCapture, work: Path) -> dict[str, Any]:
    users = [f"m{n:02}" for n in range(1, args.mailboxes + 1)]
    for user in users:
        box.as_user(user).reset()
    url = pg.create_database(f"inboxd_scale_{workers}")
    config = deployment(work / f"w{workers}", args.mailboxes, box.port, capture.port, url)
    assert inboxd(config, "migrate", "--team", "M01").wait(120) == 0, "migrate failed"
    teams = load_teams(config, secrets=False)
    open_database(url, migrate=False)
    procs = []
    for n in range(workers):
        folder = work / f"w{workers}-{n}"
        shutil.copytree(config.parent, folder)
        procs.append(inboxd(folder / config.name, "run", log=folder / "run.log"))
    share = -(-args.mailboxes // workers)

    def shared() -> bool:
        seen, unwatched = roster(teams)
        return len(seen) == workers and not unwatched and max(len(w.teams) for w in seen) <= share
    wait_for(shared, f"{workers} worker(s) sharing {args.mailboxes} mailboxes", 120)

    time.sleep(3.0)  # every team's delivery process started and connected
    connections = connections_of(url)
    acks = Acks(capture)
    acks.seen = len(capture.messages)
    acks.start()
    clients = {user: box.as_user(user).connect() for user in users}
    appended: dict[str, float] = {}
    mailbox_of: dict[str, str] = {}  # subject -> the team key it was sent to
    total, kill_at, killed = args.rate * args.seconds, None, None
    failover: dict[str, float] = {}
    start = time.time()
    for i in range(total):
        time.sleep(max(0.0, start + i / args.rate - time.time()))
        user, subject = users[i % len(users)], f"Scale {workers}-{i}"
        clients[user].append("INBOX", make_mail(f"r{i}@example.org", subject, f"Request {i}.",
                                                to=f"{user}@example.org"))
        appended[subject], mailbox_of[subject] = time.time(), user.upper()
        if workers > 1 and killed is None and i == total // 2:
            killed = kill_most(teams, procs, signal.SIGSTOP if args.freeze else signal.SIGKILL)
            kill_at = time.time()
            threading.Thread(target=watch_failover, args=(killed, kill_at, failover), daemon=True).start()
    for client in clients.values():
        client.logout()
    wait_until = time.monotonic() + 120
    while (len(acks.first) < total or (killed and len(failover) < len(killed[1]))) and time.monotonic() < wait_until:
        time.sleep(0.1)
    time.sleep(1.0)  # a late duplicate, if any, arrives too
    if killed and args.freeze:  # thawed: it finds its leases gone, and must not write anything twice
        os.killpg(next(p for p in procs if p.pid == int(killed[0].split(":")[-2])).pid, signal.SIGCONT)
        time.sleep(2 * RENEW_SECONDS + 1.0)
    acks.done.set()
    subjects = Counter(item.subject for item in Item.select(Item.subject))
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.wait(60)
    steady = [acks.first[s] - t for s, t in appended.items()
              if s in acks.first and (kill_at is None or t < kill_at - STEADY_MARGIN_SECONDS)]
    last_ack = max(acks.first.values(), default=start)
    times = list(failover.values())
    recovered = [min((acks.first[s] - kill_at for s, t in appended.items() if mailbox_of[s] == key and t > kill_at
                      and s in acks.first), default=float("nan")) for key in killed[2]] if killed and kill_at else []
    return {"workers": workers, "requests": total, "connections": connections, "requests_per_s": round(len(acks.first) / (last_ack - start), 1),
            # None: no mail was sent long enough before the kill to count as steady (a stream too short)
            "latency_p50_s": round(statistics.median(steady), 3) if steady else None,
            "latency_p95_s": round(percentile(steady, 0.95), 3) if steady else None,
            "latency_max_s": round(max(steady), 3) if steady else None,
            "killed_mailboxes": len(killed[1]) if killed else 0,
            "failover_p50_s": round(statistics.median(times), 2) if times else None,
            "failover_max_s": round(max(times), 2) if times else None,
            "recovered_p50_s": round(statistics.median(recovered), 2) if recovered else None,
            "recovered_max_s": round(max(recovered), 2) if recovered else None,
            "lost": sum(1 for s in appended if subjects[s] == 0),
            "duplicate_items": sum(n - 1 for s, n in subjects.items() if n > 1),
            "unacknowledged": total - len(acks.first),
            "duplicate_acks": sum(n - 1 for n in acks.count.values() if n > 1)}


def connections_of(url: str) -> int:
    """The sessions open on the database now (every worker's, and their delivery processes')."""
    from inboxd.models import db
    return int(db.execute_sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
               .fetchone()[0]) - 1  # not the bench's own


def kill_most(teams: list, procs: list[subprocess.Popen],
              how: signal.Signals) -> tuple[str, list[str], tuple[str, ...]]:
    """SIGKILL (or SIGSTOP) to the worker holding most mailboxes and its delivery; its name, leases and teams."""
    seen, _ = roster(teams)
    most = max(seen, key=lambda w: len(w.teams))
    proc = next(p for p in procs if p.pid == most.pid)
    os.killpg(proc.pid, how)
    by_key = {config.team.key: lease_name(config) for config in teams}
    return most.name, [by_key[key] for key in most.teams], most.teams


def watch_failover(killed: tuple[str, list[str], tuple[str, ...]], since: float, found: dict[str, float]) -> None:
    """When each of the killed worker's leases is held by a live other worker (the database's clock)."""
    name, leases, _ = killed
    from peewee import fn
    while len(found) < len(leases) and time.time() - since < 120:
        live = {w.name for w in Worker.select().where(Worker.expires_at > fn.now())}
        for lease in Lease.select().where(Lease.name.in_(leases) & (Lease.expires_at > fn.now())):
            if lease.holder != name and lease.holder in live and lease.name not in found:
                found[lease.name] = time.time() - since
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--rate", type=int, default=10, help="requests a second, round the mailboxes")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--max-connections", type=int, default=300,
                        help="PostgreSQL's max_connections (its default, 100, is about 20 teams' worth)")
    parser.add_argument("--freeze", action="store_true", help="SIGSTOP the worker holding most, not SIGKILL")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    users = [f"m{n:02}" for n in range(2, args.mailboxes + 1)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="inboxd-scale-") as tmp, \
            PostgresServer(max_connections=args.max_connections) as pg, \
            DovecotServer(user="m01", more_users=users) as box, SmtpCapture() as capture:
        try:
            for count in (int(n) for n in args.workers.split(",")):
                rows.append(one_count(count, args, pg, box, capture, Path(tmp)))
                if not args.json:
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            for proc in STARTED:
                if proc.poll() is None:  # a failed count's workers (and their delivery processes)
                    os.killpg(proc.pid, signal.SIGKILL)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"\ninboxd scale benchmark: {args.mailboxes} mailboxes, {args.rate} requests/s for {args.seconds} s; "
          f"Dovecot, PostgreSQL, {os.cpu_count()} CPUs")
    print("| workers | PG sessions | requests/s | latency p50 / p95 / max (s) | killed: mailboxes "
          f"| failover p50 / max (s) | {'frozen' if args.freeze else 'killed'}: served again p50 / max (s) "
          "| lost | duplicate items | duplicate acks |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fail = f"{r['failover_p50_s']} / {r['failover_max_s']}" if r["killed_mailboxes"] else "—"
        back = f"{r['recovered_p50_s']} / {r['recovered_max_s']}" if r["killed_mailboxes"] else "—"
        print(f"| {r['workers']} | {r['connections']} | {r['requests_per_s']} | {r['latency_p50_s']} / {r['latency_p95_s']} / "
              f"{r['latency_max_s']} | {r['killed_mailboxes'] or '—'} | {fail} | {back} | {r['lost']} | "
              f"{r['duplicate_items']} | {r['duplicate_acks']} |")


if __name__ == "__main__":
    main()
