"""Memory and PostgreSQL sessions of one idle `inboxd run` worker holding 1, 2 and 4 teams (issue 17).

The worker is alone on its database, so it holds every team's mailbox lease. One Dovecot with a user per
team, one SMTP capture, a fresh PostgreSQL database per measurement (migrated first, as a deployment
would). Once the worker holds every lease it is left idle for a few seconds, then sampled once a second:
its process tree's RSS with shared pages counted once (bench/ingest.py's TreeRss), how many processes,
and the sessions on the database (pg_stat_activity, less the bench's own).

The baseline, measured in the same run: the same deployments under another source tree (`--before`,
e.g. main's: `git archive main | tar -x -C /tmp/inboxd-main`), alternating with this tree's.

    python bench/worker_memory.py --before /tmp/inboxd-main            # 1, 2 and 4 teams, before and after
    python bench/worker_memory.py --before /tmp/inboxd-main --teams 1 8 --json

Needs root, Dovecot and PostgreSQL's server binaries (as the tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ingest import TreeRss  # noqa: E402
from postgres import PostgresServer  # noqa: E402
from scale import deployment  # noqa: E402

from inboxd.config import load_teams  # noqa: E402
from inboxd.models import db, connect_database  # noqa: E402
from inboxd.servers import SmtpCapture  # noqa: E402
from inboxd.servers.imap import DovecotServer  # noqa: E402
from inboxd.workers import roster  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IDLE_SECONDS = 5.0  # after the worker holds every lease: IMAP connected, delivery started
SAMPLES = 5


def inboxd(tree: Path, config: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    """inboxd from the source `tree`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), *sys.path])}
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
    return subprocess.Popen([sys.executable, "-m", "inboxd.cli", "--config", str(config), *args], stdout=out,
                            stderr=subprocess.STDOUT, env=env, cwd=config.parent, start_new_session=True)


def sessions() -> int:
    return int(db.execute_sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
               .fetchone()[0]) - 1  # not the bench's own


def measure(tree: Path, teams: int, pg: PostgresServer, box: DovecotServer, capture: SmtpCapture, work: Path,
            label: str) -> dict[str, object]:
    url = pg.create_database(f"inboxd_worker_{label}_{teams}")
    config = deployment(work / f"{label}-{teams}", teams, box.port, capture.port, url)
    assert inboxd(tree, config, "migrate", "--team", "M01").wait(120) == 0, "migrate failed"
    configs = load_teams(config, secrets=False)
    connect_database(url)  # the schema of either tree: the roster reads the lease and worker tables only
    run = inboxd(tree, config, "run", log=config.parent / "run.log")
    try:
        deadline = time.monotonic() + 60
        while not ((seen := roster(configs)[0]) and len(seen[0].teams) == teams):
            if time.monotonic() > deadline or run.poll() is not None:
                raise SystemExit(f"the worker did not take every lease:\n{(config.parent / 'run.log').read_text()}")
            time.sleep(0.2)
        time.sleep(IDLE_SECONDS)
        tree_rss, samples = TreeRss(run.pid), []
        for _ in range(SAMPLES):
            shared_once, _, count = tree_rss.sample()
            samples.append((shared_once, count, sessions()))
            time.sleep(1)
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(60)
        db.close()
    return {"tree": label, "teams": teams, "processes": samples[-1][1],
            "rss_mb": round(statistics.median(s[0] for s in samples) / 1024 / 1024, 1),
            "pg_sessions": samples[-1][2]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the source tree to compare with (e.g. main's)")
    parser.add_argument("--teams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    users = [f"m{n:02}" for n in range(2, max(args.teams) + 1)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="inboxd-worker-memory-") as tmp, PostgresServer() as pg, \
            DovecotServer(user="m01", more_users=users) as box, SmtpCapture() as capture:
        for teams in args.teams:
            for label, tree in (("before", args.before.resolve()), ("after", ROOT)):
                rows.append(measure(tree, teams, pg, box, capture, Path(tmp), label))
                if not args.json:
                    print(json.dumps(rows[-1]), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"\none idle worker holding every team's lease; RSS of its process tree, shared pages once (median of "
          f"{SAMPLES}), MB; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print("| teams | processes before / after | RSS before / after (MB) | PG sessions before / after |")
    print("|---|---|---|---|")
    for before, after in zip(rows[::2], rows[1::2], strict=True):
        print(f"| {before['teams']} | {before['processes']} / {after['processes']} | {before['rss_mb']} / "
              f"{after['rss_mb']} | {before['pg_sessions']} / {after['pg_sessions']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
