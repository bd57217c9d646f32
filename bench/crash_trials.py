"""Crash trials: SIGKILL the real daemon at random moments while mail streams in; count what was lost or doubled.

A real IMAP server (Dovecot where available, else pymap) receives N request mails from distinct
senders, appended a few at a time while `inboxd run` works on them. The daemon is killed with
SIGKILL K times at random moments (seeded) and restarted each time; a last run is left to finish
and is stopped with SIGTERM. Then, from the database, the mailbox and the SMTP capture:

  lost              requests with no item
  duplicate items   items beyond one per request
  duplicate acks    acknowledgement deliveries beyond one per request (SMTP's window: a kill after
                    the server said 250 and before the outbox recorded it; allowed: one per kill)
  second acks       requests with two different acknowledgements (never allowed)

One summary line; exit 1 when anything was lost or doubled beyond what SMTP cannot rule out.

    python bench/crash_trials.py [--kills K] [--mails N] [--seed S] [--server dovecot|pymap|auto] [--backlog] [--json]

With --backlog every mail is in INBOX before the first start: each kill lands while the daemon reads
and sends flat out, where the SMTP window is widest (the issue's "3 duplicates in 12 kills").
"""

from __future__ import annotations

import argparse
import email
import json
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from ingest import _env, _folder_count, _inboxd, make_mails, pick_server, server_label

from inboxd.localconfig import write_local_config
from inboxd.servers import ImapServer, SmtpCapture, append_messages

KILL_AFTER = (0.4, 2.5)  # seconds after a start: from mid start-up to mid-batch


def stream(server: ImapServer, mails: list[bytes], seconds: float, done: threading.Event,
           rng: random.Random) -> None:
    """Append the mails a few at a time over about `seconds`, as a busy alias receives them."""
    pause = seconds / max(1, len(mails) / 5)
    for start in range(0, len(mails), 5):
        append_messages(server, mails[start:start + 5])
        time.sleep(rng.uniform(0.0, 2 * pause))
    done.set()


def query(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def watching(log: Path, offset: int, timeout: float) -> bool:
    """Wait until the run started after `offset` in the log is up (and handles SIGTERM)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with log.open("rb") as text:
            text.seek(offset)
            if b"watching with" in text.read():
                return True
        time.sleep(0.1)
    return False


def settle(server: ImapServer, db: Path, expected: int, timeout: float) -> bool:
    """Wait for the last run to have every mail done and nothing left to send."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            items = query(db, "select count(*) from item")[0][0]
            pending = query(db, "select count(*) from outbox where status = 'pending'")[0][0]
        except sqlite3.OperationalError:
            items, pending = 0, 1
        if items >= expected and pending == 0 and _folder_count(server, "INBOX") == 0:
            return True
        time.sleep(0.2)
    return False


def trial(kills: int, count: int, seed: int, server: ImapServer, work: Path, backlog: bool = False) -> dict:
    """Run the trial and count; the figures as a dict."""
    rng = random.Random(seed)
    mails = make_mails(count, f"crash{seed}")
    request_ids = {email.message_from_bytes(m)["Message-ID"] for m in mails}
    with SmtpCapture() as smtp:
        config = write_local_config(work, server.port, smtp.port, server.user, server.password,
                                    retry_seconds=1, facilities=("ana@example.org", "bo@example.org"))
        db, log = work / "inboxd.db", work / "inboxd.log"
        server.reset()
        appended = threading.Event()
        spread = kills * sum(KILL_AFTER) / 2  # the mail keeps coming while the daemon is being killed
        if backlog:  # or it is all there at once
            append_messages(server, mails)
            mails, spread = [], 0
        feeder = threading.Thread(target=stream, args=(server, mails, spread, appended, random.Random(seed)),
                                  daemon=True)
        feeder.start()
        started = time.monotonic()
        with log.open("ab") as out:
            for _ in range(kills):
                daemon = subprocess.Popen(_inboxd(config, "run"), stdout=out, stderr=out, env=_env(), cwd=work)
                time.sleep(rng.uniform(*KILL_AFTER))
                daemon.send_signal(signal.SIGKILL)
                daemon.wait()
            appended.wait()
            offset = log.stat().st_size
            daemon = subprocess.Popen(_inboxd(config, "run"), stdout=out, stderr=out, env=_env(), cwd=work)
            settled = watching(log, offset, timeout=60) and settle(server, db, count, timeout=120)
            daemon.send_signal(signal.SIGTERM)
            stopped = daemon.wait(timeout=60) == 0
        seconds = time.monotonic() - started
        acks = [email.message_from_bytes(m.data) for m in smtp.messages]
    per_request = dict(query(db, "select message_id, count(distinct item_id) from message "
                                 "where direction = 'in' and item_id is not null group by message_id"))
    deliveries: Counter[str] = Counter()
    distinct: dict[str, set[str]] = {}
    for ack in acks:
        answered = "".join(str(ack["In-Reply-To"] or "").split())
        if answered in request_ids:
            deliveries[answered] += 1
            distinct.setdefault(answered, set()).add(ack["Message-ID"])
    return {
        "server": server_label(server), "kills": kills, "mails": count, "seed": seed, "backlog": backlog,
        "seconds": round(seconds, 1), "settled": settled, "stopped_cleanly": stopped,
        "items": query(db, "select count(*) from item")[0][0],
        "lost": len(request_ids - set(per_request)),
        "duplicate_items": sum(n - 1 for n in per_request.values()),
        "acknowledged": len(deliveries),
        "duplicate_acks": sum(n - 1 for n in deliveries.values()),
        "second_acks": sum(1 for ids in distinct.values() if len(ids) > 1),
        "inbox_left": _folder_count(server, "INBOX"), "processed": _folder_count(server, "Processed"),
    }


def verdict(f: dict) -> list[str]:
    """What went wrong, if anything."""
    problems = []
    if f["lost"] or f["duplicate_items"] or f["second_acks"]:
        problems.append(f"{f['lost']} lost, {f['duplicate_items']} duplicate item(s), "
                        f"{f['second_acks']} request(s) with two different acknowledgements")
    if f["duplicate_acks"] > f["kills"]:
        problems.append(f"{f['duplicate_acks']} duplicate acknowledgement(s) for {f['kills']} kill(s)")
    if f["acknowledged"] != f["mails"] or f["inbox_left"] or f["processed"] != f["mails"]:
        problems.append(f"{f['acknowledged']} of {f['mails']} acknowledged, {f['inbox_left']} left in INBOX, "
                        f"{f['processed']} in Processed")
    if not f["settled"] or not f["stopped_cleanly"]:
        problems.append("the last run did not finish in time or did not stop cleanly")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs (default 20)")
    parser.add_argument("--mails", type=int, default=500, help="request mails streamed in (default 500)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the kill moments and the stream")
    parser.add_argument("--server", choices=["dovecot", "pymap", "auto"], default="auto")
    parser.add_argument("--backlog", action="store_true", help="all mail in INBOX before the first start")
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        server = stack.enter_context(pick_server(args.server))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inboxd-crash-")))
        figures = trial(args.kills, args.mails, args.seed, server, work, args.backlog)
        problems = verdict(figures)
        if problems:
            sys.stderr.write((work / "inboxd.log").read_text(errors="replace")[-4000:])
    figures["problems"] = problems
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"crash trials ({figures['server']}): {figures['kills']} kills over {figures['mails']} mails in "
              f"{figures['seconds']} s: {figures['items']} items, {figures['acknowledged']} acknowledged, "
              f"{figures['lost']} lost, {figures['duplicate_items']} duplicate items, "
              f"{figures['duplicate_acks']} duplicate acks (at most {figures['kills']}), "
              f"{figures['second_acks']} second acks: {'FAIL ' + '; '.join(problems) if problems else 'PASS'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
