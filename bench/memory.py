"""Memory benchmark (issue 13 item 3): peak RSS of `inboxd once` on a mailbox of huge mails, against a baseline.

Starts its own IMAP server (Dovecot where available, else pymap) and an SMTP capture in a separate
process, then runs `inboxd once` as a subprocess twice, each on a fresh mailbox and database:

  baseline  only one normal request in the INBOX;
  big       N mails of S MB (a short text and a random attachment, just under the 25 MB limit at
            the default 24 MB) with the same normal request queued behind them.

It prints each run's peak RSS (`ru_maxrss` of that child alone, via wait4) and checks, untimed,
that every mail became an item and the normal request was acknowledged. Exits 1 when a result is
wrong; a missed memory goal prints MISS and exits 0 (it is a benchmark, not a test).

    python bench/memory.py [--big N] [--size-mb S] [--server dovecot|pymap|auto] [--tree PATH] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from inboxd.localconfig import write_local_config
from inboxd.servers import ImapServer, SmtpCapture, SmtpProcess, append_messages
from ingest import _folder_count, pick_server, server_label

REPO = Path(__file__).resolve().parent.parent
GOAL_RSS_MB = 300.0  # issue 13: 40 mails of 24 MB and one normal request
NORMAL = "rosa.normal@example.org"


def big_mails(count: int, size_mb: float) -> Iterator[bytes]:
    """`count` requests of about `size_mb` MiB each: a short text and one base64 attachment (made once)."""
    payload = base64.encodebytes(os.urandom(int(size_mb * 1024 * 1024 * 57 / 78))).replace(b"\n", b"\r\n")
    for n in range(count):
        head = (f"From: Sender {n} <sender{n}@example.org>\r\nTo: help@example.org\r\n"
                f"Subject: Scans of the contracts, part {n}\r\nMessage-ID: <big-{n}@example.org>\r\n"
                f"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
                f"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\n\r\nPlease file the attached scans.\r\n--b\r\n"
                f"Content-Type: application/pdf; name=\"scans-{n}.pdf\"\r\nContent-Transfer-Encoding: base64\r\n"
                f"Content-Disposition: attachment; filename=\"scans-{n}.pdf\"\r\n\r\n").encode()
        yield head + payload + b"--b--\r\n"


def normal_request() -> bytes:
    return (f"From: Rosa Normal <{NORMAL}>\r\nTo: help@example.org\r\nSubject: Monitor flickers\r\n"
            f"Message-ID: <normal@example.org>\r\nDate: Mon, 23 Nov 2026 10:05:00 +0100\r\n\r\n"
            f"My monitor flickers since this morning.\r\n").encode()


def _env(tree: Path) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def run_once(server: ImapServer, smtp: SmtpProcess, work: Path, tree: Path) -> dict:
    """`inboxd once` on the INBOX as it is: its peak RSS, time, and what became of the mail."""
    config = write_local_config(work, server.port, smtp.port, server.user, server.password, rules=tree / "rules",
                                templates=tree / "templates", extra="[service]\nannounce_new = false\n")
    command = [sys.executable, "-m", "inboxd.cli", "--config", str(config)]
    with open(work / "inboxd.log", "wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen([*command, "once"], stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=work,
                                env=_env(tree))
        _, status, usage = os.wait4(proc.pid, 0)  # this child alone: its own peak RSS
        seconds = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss * 1024 / 1e6, 1),
              "returncode": proc.returncode, "items": 0, "normal_acknowledged": False,
              "inbox_left": _folder_count(server, "INBOX")}
    if proc.returncode != 0:
        result["log"] = (work / "inboxd.log").read_text(errors="replace")[-2000:]
        return result
    listing = subprocess.run([*command, "items", "--all", "--json"], capture_output=True, cwd=work,
                             env=_env(tree), timeout=120)
    items = json.loads(listing.stdout) if listing.returncode == 0 else []
    result["items"] = len(items)
    result["normal_acknowledged"] = any(i["requester"] == NORMAL and i["acknowledged_at"] for i in items)
    return result


def check(name: str, run: dict, expected: int) -> list[str]:
    """What is wrong with a run: its exit, its items, the normal request, the INBOX."""
    if run["returncode"]:
        return [f"{name}: exit {run['returncode']}: {run.get('log', '')}"]
    problems = [f"{run['items']} items, expected {expected}"] if run["items"] != expected else []
    problems += [] if run["normal_acknowledged"] else ["the normal request was not acknowledged"]
    problems += [f"{run['inbox_left']} mail(s) left in INBOX"] if run["inbox_left"] else []
    return [f"{name}: {problem}" for problem in problems]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=40, help="huge mails before the normal request (40)")
    parser.add_argument("--size-mb", type=float, default=24.0, help="size of each, in MiB (24)")
    parser.add_argument("--server", choices=["auto", "dovecot", "pymap"], default="auto")
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout whose inboxd runs (this one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    server = pick_server(args.server)
    with tempfile.TemporaryDirectory(prefix="inboxd-bench-memory-") as tmp, server:
        root = Path(tmp)
        smtp = SmtpCapture.spawn(root / "captured")
        try:
            append_messages(server, [normal_request()])
            baseline = run_once(server, smtp, root / "baseline", args.tree)
            server.reset()
            loading = time.monotonic()
            append_messages(server, big_mails(args.big, args.size_mb), batch=1)
            append_messages(server, [normal_request()])
            loaded = time.monotonic() - loading
            big = run_once(server, smtp, root / "big", args.tree)
        finally:
            smtp.stop()
    problems = check("baseline", baseline, 1) + check("big", big, args.big + 1)
    figures = {"imap_server": server_label(server), "big": args.big, "size_mb": args.size_mb,
               "tree": str(args.tree), "load_seconds": round(loaded, 1), "baseline": baseline, "run": big,
               "goal_rss_mb": GOAL_RSS_MB, "problems": problems, "correct": not problems}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        verdict = "PASS" if big["peak_rss_mb"] < GOAL_RSS_MB else "MISS"
        print(f"inboxd memory benchmark: {args.big} mails of {args.size_mb:g} MiB + 1 normal request, "
              f"{figures['imap_server']} (appended in {loaded:.1f} s)")
        print(f"baseline, once on the normal request alone: peak RSS {baseline['peak_rss_mb']:7.1f} MB"
              f"  ({baseline['seconds']:.1f} s)")
        print(f"once on the huge mails and the request:    peak RSS {big['peak_rss_mb']:7.1f} MB"
              f"  ({big['seconds']:.1f} s)  goal < {GOAL_RSS_MB:.0f} MB  {verdict}")
        print(f"items: {big['items']}/{args.big + 1}, normal request acknowledged: "
              f"{'yes' if big['normal_acknowledged'] else 'NO'}, INBOX left: {big['inbox_left']}")
        for problem in problems:
            print(f"CORRECTNESS FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
