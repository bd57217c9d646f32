"""Memory of one idle `inboxd run` serving 1, 2 and 4 teams (issue 17): each team has its own delivery process.

Each team has a Dovecot of its own (its own user), all share one SMTP capture and one SQLite database.
`inboxd run` (without --team) is started, waited for until /healthz says every team is ok (connected,
IDLE), left idle for a few seconds, then its memory is sampled once a second: the whole tree with shared
pages counted once (as bench/ingest.py counts it: the private pages of each process and the largest
shared set of one), the plain sum of the processes' RSS, and the main process alone. The baseline,
measured in the same run: the lone config of one team (no teams.d), as every deployment ran before.

    python bench/teams_memory.py            # 1 (lone), 2 and 4 teams
    python bench/teams_memory.py --json
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
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from inboxd.localconfig import write_local_config
from inboxd.servers import SmtpCapture
from inboxd.servers.base import free_port
from inboxd.servers.imap import DovecotServer
from ingest import TreeRss

IDLE_SECONDS = 5.0  # left alone after every team is ok, before the samples
SAMPLES = 5
PREFIXES = ("IT", "TB", "TC", "TD", "TE", "TF", "TG", "TH")


def write_teams(work: Path, servers: list[DovecotServer], smtp_port: int, http_port: int, lone: bool) -> Path:
    """The shared config (the first team's) and, unless `lone`, a teams.d file per server."""
    path = write_local_config(work, servers[0].port, smtp_port, servers[0].user, servers[0].password,
                              extra=f'\n[http]\nlisten = "127.0.0.1:{http_port}"\n')
    if lone:
        return path
    (work / "teams.d").mkdir()
    (work / "teams.d" / "t0.toml").write_text("")
    for n, server in enumerate(servers[1:], 1):
        (work / "teams.d" / f"t{n}.toml").write_text(
            f'[team]\nname = "Team {n}"\naddress = "team{n}@example.org"\nref_prefix = "{PREFIXES[n]}"\n\n'
            f'[mailbox]\nuser = "{server.user}"\nport = {server.port}\n')
    return path


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def measure(servers: list[DovecotServer], smtp: SmtpCapture, lone: bool) -> dict[str, float]:
    """Start `inboxd run` over the first len(servers) teams, wait until idle, sample its memory, stop it."""
    with tempfile.TemporaryDirectory() as tmp:
        work, http_port = Path(tmp), free_port()
        config = write_teams(work, servers, smtp.port, http_port, lone)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), *sys.path])}
        run = subprocess.Popen([sys.executable, "-m", "inboxd.cli", "--config", str(config), "run"],
                               stdout=subprocess.DEVNULL, stderr=open(work / "run.log", "wb"), env=env, cwd=work,
                               start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not healthy(http_port):
                if time.monotonic() > deadline or run.poll() is not None:
                    raise SystemExit(f"inboxd run did not become healthy:\n{(work / 'run.log').read_text()}")
                time.sleep(0.2)
            time.sleep(IDLE_SECONDS)
            tree, samples = TreeRss(run.pid), []
            for _ in range(SAMPLES):
                shared_once, rss_sum, count = tree.sample()
                main = _rss(run.pid)
                samples.append((shared_once, rss_sum, count, main))
                time.sleep(1)
        finally:
            os.killpg(run.pid, signal.SIGTERM)
            code = run.wait(60)
        if code != 0:
            raise SystemExit(f"inboxd run exited {code}:\n{(work / 'run.log').read_text()}")
    mb = 1024 * 1024
    return {"teams": len(servers), "lone": lone, "processes": samples[-1][2],
            "tree_mb": statistics.median(s[0] for s in samples) / mb,
            "sum_mb": statistics.median(s[1] for s in samples) / mb,
            "main_mb": statistics.median(s[3] for s in samples) / mb}


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=int, nargs="+", default=[2, 4], help="team counts besides the lone baseline")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not DovecotServer.available():
        raise SystemExit("needs Dovecot and root (as the tests on Dovecot do)")
    most = max(args.teams)
    with ExitStack() as stack, SmtpCapture() as smtp:
        servers = [stack.enter_context(DovecotServer(user=f"team{n}")) for n in range(most)]
        rows = [measure(servers[:1], smtp, lone=True)] + [measure(servers[:n], smtp, lone=False) for n in args.teams]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    base = rows[0]
    print("inboxd run, idle, RSS in MB (median of 5 samples a second apart); baseline: the lone config, this run")
    print(f"{'teams':<10} {'processes':>9} {'tree':>8} {'sum':>8} {'main':>8} {'tree - baseline':>16} {'per team':>9}")
    for row in rows:
        extra = row["tree_mb"] - base["tree_mb"]
        per = extra / (row["teams"] - 1) if row["teams"] > 1 else 0.0
        label = "1 (lone)" if row["lone"] else str(row["teams"])
        print(f"{label:<10} {row['processes']:>9} {row['tree_mb']:>8.1f} {row['sum_mb']:>8.1f} {row['main_mb']:>8.1f} "
              f"{extra:>16.1f} {per:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
