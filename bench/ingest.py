"""Ingest benchmark: inboxd's end-to-end rate against the raw floor, measured in one run.

Loads N small request mails (distinct senders) into a real IMAP server (Dovecot where
available, else pymap) and, against an SMTP capture running in a separate process that files
every mail it receives, measures:

  (a) raw fetch+parse: imapclient UID FETCH BODY.PEEK[] in batches of 100 over one connection,
      each mail parsed with mailparser.parse_from_bytes;
  (b) raw pipeline: (a) plus one plain smtplib acknowledgement per mail (built with
      email.message), sent sequentially over one SMTP connection, until the capture has filed
      all N — the floor of what any tracker must do;
  (c) `inboxd once` as a subprocess with a fresh config and database, from its start until it
      has exited and the capture has filed every acknowledgement;

then prints the rates, c/b and inboxd's peak RSS against the goals of issue 3. Every phase
reads the same N mails, freshly appended to an emptied INBOX. Exits 0 even when a goal is
missed (it is a benchmark), non-zero when the result is wrong (items, acks, mailbox state).

    python bench/ingest.py [--mails N] [--server dovecot|pymap|auto] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import smtplib
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, formataddr, getaddresses, make_msgid
from pathlib import Path
from typing import Callable

import mailparser

from inboxd.localconfig import write_local_config
from inboxd.servers import (
    DovecotServer,
    ImapServer,
    PymapServer,
    SmtpCapture,
    SmtpProcess,
    append_messages,
    count_files,
    imap_server_for_tests,
)

REPO = Path(__file__).resolve().parent.parent
FETCH_BATCH = 100
GOAL_RATIO = 0.50  # c/b, issue 3
GOAL_RSS_MB = 150.0  # peak RSS of the inboxd process, issue 3
TEAM = "help@example.org"

# ---------------------------------------------------------------------------------------------
# The mails: small, realistic requests with subjects that the shipped rules route differently.

FIRST = ["Rosa", "Jonas", "Mia", "Lukas", "Lea", "Finn", "Emma", "Paul", "Hannah", "Elias", "Sofia",
         "Noah", "Marie", "Ben", "Lina", "Felix", "Clara", "Anton", "Ida", "Karl", "Jörg", "Zoë"]
LAST = ["Becker", "Schmidt", "Keller", "Wagner", "Hoffmann", "Schulz", "Koch", "Richter", "Klein",
        "Wolf", "Neumann", "Braun", "Zimmermann", "Krüger", "Hartmann", "Lange", "Werner", "Krause"]
# (weight, subject templates, sender domain, extra headers): every subject becomes an item
# (no decline/redirect/ignore rule matches), so every mail gets exactly one acknowledgement.
KINDS: list[tuple[int, list[str], str, dict[str, str]]] = [
    (20, ["Outage: shared drive S: unreachable", "Wi-Fi not working in room {n}",
          "Email is down on floor {f}", "Cannot log in to the CRM since this morning",
          "Can't login to the time tracking tool"], "example.org", {}),
    (20, ["Printer on floor {f} shows paper jam", "Toner empty in copy room {n}",
          "Printer B{n} prints blank pages"], "example.org", {}),
    (20, ["Password expired for account {n}", "VPN access for a new colleague",
          "Access to the finance share", "Account locked after holiday"], "example.org", {}),
    (33, ["New monitor for desk {n}", "Question about the projector in room {n}",
          "Software install request: Inkscape", "Bildschirm flackert – Raum {n}",
          "Laptop battery swollen", "Docking station does not charge", "Headset for calls"],
     "example.org", {}),
    (7, ["Urgent: screen in the board room", "Outage of the video link to Berlin"],
     "board.example.org", {"X-Priority": "1"}),
]
PARAGRAPHS = [
    "since yesterday afternoon I have this problem and it keeps coming back. I tried switching it "
    "off and on again, as the intranet page suggests, but that only helped for ten minutes or so.",
    "Could someone please have a look when you have a moment? I am in the office all week, room "
    "{n} on the {f}. floor, and I am happy to come by your desk if that is easier for you.",
    "A colleague from the next team said they saw the same thing last month, so it may not be my "
    "machine only. I have attached nothing, but I can send a photo of the error if it helps.",
    "It is not blocking me completely, but I have a customer presentation on Thursday and would "
    "like this to work by then. Thanks a lot in advance for your help!",
    "The message on screen says something like \"device not ready (code 0x8007045D)\", then the "
    "window closes. It happens on both the docking station and without it.",
]


def make_mails(count: int, run: str, seed: int = 3) -> list[bytes]:
    """``count`` distinct request mails (~1-2 KB each, some multipart/alternative)."""
    rng = random.Random(seed)
    weights = [k[0] for k in KINDS]
    sent = datetime(2026, 11, 23, 7, 30, tzinfo=timezone.utc)
    mails = []
    for i in range(count):
        _, subjects, domain, extra = rng.choices(KINDS, weights)[0]
        first, last = rng.choice(FIRST), rng.choice(LAST)
        sender = f"{first.lower().replace('ö', 'oe').replace('ë', 'e')}.{last.lower().replace('ü', 'ue')}{i}@{domain}"
        n, f = rng.randint(1, 499), rng.randint(1, 6)
        when = sent + timedelta(seconds=37 * i)
        mail = EmailMessage()
        mail["Received"] = (f"from mx2.example.org (mx2.example.org [192.0.2.{i % 250 + 1}]) by "
                            f"mail.example.org with ESMTPS id {run}{i:06d}; {format_datetime(when)}")
        mail["From"] = formataddr((f"{first} {last}", sender))
        mail["To"] = formataddr(("IT Help", TEAM))
        mail["Subject"] = rng.choice(subjects).format(n=n, f=f)
        mail["Date"] = format_datetime(when)
        mail["Message-ID"] = f"<bench-{run}-{i}@mail.example.org>"
        mail["User-Agent"] = rng.choice(["Mozilla Thunderbird 128.4", "Microsoft Outlook 16.0",
                                         "Apple Mail (2.3774)"])
        mail["Content-Language"] = "en-GB"
        for name, value in extra.items():
            mail[name] = value
        paragraphs = rng.sample(PARAGRAPHS, rng.randint(2, 3))
        text = ("Hello IT team,\n\n" + "\n\n".join(p.format(n=n, f=f) for p in paragraphs)
                + f"\n\nBest regards,\n{first} {last}\nSales & Marketing, ext. {1000 + i % 9000}\n")
        mail.set_content(text)
        if i % 5 == 0:  # every fifth from a client that sends HTML too
            html = "".join(f"<p>{p}</p>" for p in text.split("\n\n"))
            mail.add_alternative(f"<html><body>{html}</body></html>", subtype="html")
        mails.append(mail.as_bytes())
    return mails


# ---------------------------------------------------------------------------------------------
# (a) and (b): the raw floor.

def fetch_and_parse(server: ImapServer, each: Callable[[mailparser.MailParser], None] | None = None) -> int:
    """UID FETCH BODY.PEEK[] of the whole INBOX in batches over one connection, parsing each mail."""
    count = 0
    with server.connect() as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")  # imapclient: UID SEARCH
        for start in range(0, len(uids), FETCH_BATCH):
            chunk = uids[start:start + FETCH_BATCH]
            data = client.fetch(chunk, [b"BODY.PEEK[]"])
            for uid in chunk:
                parsed = mailparser.parse_from_bytes(data[uid][b"BODY[]"])
                if each is not None:
                    each(parsed)
                count += 1
    return count


def plain_ack(parsed: mailparser.MailParser) -> tuple[str, bytes]:
    """A small acknowledgement of a parsed request, built with email.message: (recipient, bytes)."""
    to = parsed.from_[0][1]
    ack = EmailMessage()
    ack["From"] = formataddr(("IT Help", TEAM))
    ack["To"] = to
    ack["Subject"] = f"Re: {parsed.subject}"
    ack["Date"] = format_datetime(datetime.now(timezone.utc))
    ack["Message-ID"] = make_msgid("bench", domain="example.org")
    ack["In-Reply-To"] = ack["References"] = parsed.message_id
    ack["Auto-Submitted"] = "auto-replied"
    ack.set_content(f"Hello,\n\nwe have your request \"{parsed.subject}\" and will answer within "
                    f"two business days.\n\nIT Help\n")
    return to, ack.as_bytes()


def wait_files(directory: Path, count: int, timeout: float) -> bool:
    """Poll until ``directory`` holds ``count`` captured mails."""
    deadline = time.perf_counter() + timeout
    while count_files(directory) < count:
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.002)
    return True


def clear_files(directory: Path) -> None:
    for path in directory.iterdir():
        path.unlink()


# ---------------------------------------------------------------------------------------------
# (c): inboxd once.

@dataclass
class InboxdRun:
    seconds: float = 0.0
    exit_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    returncode: int = 0
    items: int = 0
    acked_items: int = 0
    captured: int = 0
    captured_acks: int = 0
    captured_other: int = 0
    inbox_left: int = 0
    processed: int = 0
    queues: dict[str, int] = field(default_factory=dict)
    first_item_seconds: float = 0.0  # from the process start to the first item: start-up
    acked_during_ingest: int = 0  # acknowledged before the last item was created
    ack_tail_seconds: float = 0.0  # from the last item created to the last acknowledgement
    problems: list[str] = field(default_factory=list)


def _inboxd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "inboxd.cli", "--config", str(config), *args]


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _folder_count(server: ImapServer, folder: str) -> int:
    with server.connect() as client:
        if not client.folder_exists(folder):
            return 0
        return int(client.select_folder(folder, readonly=True)[b"EXISTS"])


def run_inboxd(server: ImapServer, smtp: SmtpProcess, work: Path, expected: int,
               announce_new: bool = False) -> InboxdRun:
    """`inboxd once` on the INBOX, timed to its exit and the capture's last acknowledgement."""
    result = InboxdRun()
    # Both facilities members, as in the tests: round-robin then mails an owner for 40 % of requests.
    # Announcing unowned items to their queue is off unless asked for, so that (c) sends the same
    # 1.4 mails per request as in every earlier run of this bench (see bench/README.md).
    config = write_local_config(work, server.port, smtp.port, server.user, server.password,
                                batch_size=FETCH_BATCH, retry_seconds=1,
                                facilities=("ana@example.org", "bo@example.org"),
                                extra=f"[service]\nannounce_new = {str(announce_new).lower()}\n")
    log = work / "inboxd.log"
    with open(log, "wb") as out:
        start = time.time()
        proc = subprocess.Popen(_inboxd(config, "once"), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                cwd=work, env=_env())
        try:
            # wait4 on this child alone: its own peak RSS and CPU, not the capture's or ours
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        exited = time.time()
    proc.returncode = result.returncode = os.waitstatus_to_exitcode(status)
    result.exit_seconds = exited - start
    result.cpu_seconds = usage.ru_utime + usage.ru_stime
    result.peak_rss_mb = usage.ru_maxrss * 1024 / 1e6  # Linux: KiB
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        result.problems.append(f"inboxd once exited with {result.returncode}:\n{tail}")
        return result

    # Correctness, untimed: the items, one acknowledgement each in the capture, the mailbox.
    listing = subprocess.run(_inboxd(config, "items", "--all", "--json"), capture_output=True,
                             cwd=work, env=_env(), timeout=120)
    if listing.returncode != 0:
        result.problems.append(f"inboxd items failed: {listing.stderr.decode(errors='replace')[-2000:]}")
        return result
    items = json.loads(listing.stdout)
    result.items = len(items)
    result.acked_items = sum(1 for item in items if item["acknowledged_at"])
    for item in items:
        result.queues[item["queue"]] = result.queues.get(item["queue"], 0) + 1
    requester = {item["ref"]: item["requester"].lower() for item in items}
    created = [datetime.fromisoformat(item["created_at"]) for item in items]
    acked = [datetime.fromisoformat(item["acknowledged_at"]) for item in items if item["acknowledged_at"]]
    if created and acked:
        result.acked_during_ingest = sum(1 for moment in acked if moment <= max(created))
        result.ack_tail_seconds = round(max(0.0, (max(acked) - max(created)).total_seconds()), 3)
        result.first_item_seconds = round(min(created).timestamp() - start, 3)
    acks: dict[str, list[float]] = {}
    seen: set[str] = set()
    parser = BytesHeaderParser()
    deadline = time.time() + 30
    while True:  # the capture has filed everything inboxd got a 250 for; poll only to be sure
        for entry in os.scandir(smtp.directory):
            if entry.name in seen or entry.name.startswith(".") or not entry.name.endswith(".eml"):
                continue
            seen.add(entry.name)
            with open(entry.path, "rb") as fh:
                headers = parser.parse(fh)
            ref = headers.get("X-Inboxd-Ref", "")
            to = {a.lower() for _, a in getaddresses(headers.get_all("To", []))}
            if ref in requester and requester[ref] in to and headers.get("In-Reply-To"):
                acks.setdefault(ref, []).append(entry.stat().st_mtime)
            else:
                result.captured_other += 1
        if len(acks) >= len(requester) or time.time() > deadline:
            break
        time.sleep(0.01)
    result.captured = len(seen)
    result.captured_acks = sum(len(v) for v in acks.values())
    last_ack = max((max(v) for v in acks.values()), default=exited)
    result.seconds = max(exited, last_ack) - start
    result.inbox_left = _folder_count(server, "INBOX")
    result.processed = _folder_count(server, "Processed")

    if result.items != expected:
        result.problems.append(f"{result.items} items, expected {expected}")
    if missing := sorted(set(requester) - set(acks)):
        result.problems.append(f"{len(missing)} item(s) without an acknowledgement: {missing[:5]}")
    if doubled := sorted(ref for ref, times in acks.items() if len(times) > 1):
        result.problems.append(f"{len(doubled)} item(s) acknowledged more than once: {doubled[:5]}")
    if result.acked_items != result.items:
        result.problems.append(f"only {result.acked_items} of {result.items} items have acknowledged_at")
    if result.inbox_left or result.processed != expected:
        result.problems.append(f"mailbox: INBOX has {result.inbox_left} (expected 0), Processed has "
                               f"{result.processed} (expected {expected})")
    return result


# ---------------------------------------------------------------------------------------------

def pick_server(name: str) -> ImapServer:
    if name == "dovecot":
        if not DovecotServer.available():
            raise SystemExit("error: Dovecot is not available (needs root and dovecot-imapd)")
        return DovecotServer()
    if name == "pymap":
        return PymapServer()
    return imap_server_for_tests()


def server_label(server: ImapServer) -> str:
    if isinstance(server, DovecotServer):
        version = subprocess.run([server.binary, "--version"], capture_output=True, text=True).stdout.split()
        return f"Dovecot {version[0] if version else '?'}"
    return "pymap (in-memory dict backend)"


def load(server: ImapServer, mails: list[bytes]) -> None:
    """An emptied INBOX holding exactly ``mails``."""
    server.reset()
    if append_messages(server, mails) != len(mails) or _folder_count(server, "INBOX") != len(mails):
        raise SystemExit("error: appending the mails to the INBOX failed")


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=1000, help="number of mails (default 1000)")
    parser.add_argument("--announce-new", action="store_true",
                        help="(c) also mails each unowned item to its queue's members (inboxd's default): "
                             "2 mails per request instead of 1.4")
    parser.add_argument("--server", choices=["dovecot", "pymap", "auto"], default="auto",
                        help="IMAP server (auto: Dovecot where available, else pymap; CI=true requires Dovecot)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = parser.parse_args(argv)
    if args.mails < 1:
        parser.error("--mails must be at least 1")
    n = args.mails
    mails = make_mails(n, run=f"{os.getpid()}x{time.time_ns() % 10**9}")
    say = (lambda *_: None) if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inboxd-bench-")))
        server = stack.enter_context(pick_server(args.server))
        captured = tmp / "captured"
        captured.mkdir()
        smtp = stack.enter_context(SmtpCapture.spawn(captured))
        label = server_label(server)
        say(f"{label} on port {server.port}, SMTP capture (separate process, one file per mail) on "
            f"port {smtp.port}; {n} mails, {sum(map(len, mails)) / n:.0f} bytes on average")

        # (a) raw fetch + parse
        load(server, mails)
        t = time.perf_counter()
        got = fetch_and_parse(server)
        a_seconds = time.perf_counter() - t
        if got != n:
            raise SystemExit(f"error: (a) read {got} mails, expected {n}")
        say(f"(a) {rate(n, a_seconds):.0f} mails/s")

        # (b) raw pipeline: fetch + parse + one plain SMTP acknowledgement each, sequential
        load(server, mails)
        t = time.perf_counter()
        with smtplib.SMTP(smtp.host, smtp.port, timeout=60) as client:
            def acknowledge(parsed: mailparser.MailParser) -> None:
                to, raw = plain_ack(parsed)
                client.sendmail(TEAM, [to], raw)
            got = fetch_and_parse(server, acknowledge)
        if not wait_files(captured, n, timeout=60):
            raise SystemExit(f"error: (b) the capture filed only {count_files(captured)} of {n} mails")
        b_seconds = time.perf_counter() - t
        if got != n or count_files(captured) != n:
            raise SystemExit(f"error: (b) sent {got}, captured {count_files(captured)}, expected {n}")
        say(f"(b) {rate(n, b_seconds):.0f} mails/s")
        clear_files(captured)

        # (c) inboxd once, fresh config and database
        load(server, mails)
        c = run_inboxd(server, smtp, tmp / "inboxd", n, args.announce_new)
        if not c.problems:
            say(f"(c) {rate(n, c.seconds):.0f} mails/s")

    a, b = rate(n, a_seconds), rate(n, b_seconds)
    cr = rate(n, c.seconds) if not c.problems else 0.0
    ratio = cr / b if b else 0.0
    ratio_ok, rss_ok = ratio >= GOAL_RATIO, c.peak_rss_mb < GOAL_RSS_MB
    figures = {
        "mails": n, "imap_server": label, "cpus": os.cpu_count(),
        "a_fetch_parse_per_s": round(a, 1), "a_seconds": round(a_seconds, 3),
        "b_raw_pipeline_per_s": round(b, 1), "b_seconds": round(b_seconds, 3),
        "c_inboxd_per_s": round(cr, 1), "c_seconds": round(c.seconds, 3),
        "c_process_seconds": round(c.exit_seconds, 3), "c_cpu_seconds": round(c.cpu_seconds, 3),
        "c_over_b": round(ratio, 4), "goal_c_over_b": GOAL_RATIO, "c_over_b_pass": ratio_ok,
        "peak_rss_mb": round(c.peak_rss_mb, 1), "goal_peak_rss_mb": GOAL_RSS_MB, "peak_rss_pass": rss_ok,
        **{k: v for k, v in asdict(c).items()
           if k not in ("seconds", "exit_seconds", "cpu_seconds", "peak_rss_mb", "problems")},
        "correct": not c.problems, "problems": c.problems,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        mark = lambda ok: "PASS" if ok else "MISS"  # noqa: E731
        print(f"inboxd ingest benchmark: {n} mails, {label}, SMTP capture in a separate process "
              f"filing each mail, {os.cpu_count()} CPU(s)")
        print(f"(a) raw fetch+parse:          {a:9.1f} mails/s  ({a_seconds:.3f} s)")
        print(f"(b) raw pipeline (+SMTP ack): {b:9.1f} mails/s  ({b_seconds:.3f} s)")
        print(f"(c) inboxd once:              {cr:9.1f} mails/s  ({c.seconds:.3f} s; process "
              f"{c.exit_seconds:.3f} s, CPU {c.cpu_seconds:.3f} s)")
        print(f"c/b:                          {ratio * 100:9.1f} %        goal >= {GOAL_RATIO * 100:.0f} %     "
              f"{mark(ratio_ok)}")
        print(f"peak RSS (inboxd):            {c.peak_rss_mb:9.1f} MB       goal < {GOAL_RSS_MB:.0f} MB      "
              f"{mark(rss_ok)}")
        print(f"items: {c.items}/{n}, acknowledged: {c.captured_acks} ack(s) for {c.items} item(s), "
              f"captured: {c.captured} mail(s) ({c.captured_acks} acks, {c.captured_other} other), "
              f"INBOX: {c.inbox_left}, Processed: {c.processed}, queues: "
              + ", ".join(f"{q} {k}" for q, k in sorted(c.queues.items())))
        print(f"inside (c): first item {c.first_item_seconds:.3f} s after start; "
              f"{c.acked_during_ingest} of {c.items} acks sent while inboxd was still creating items; "
              f"last ack {c.ack_tail_seconds:.3f} s after the last item")
    if c.problems:
        print("CORRECTNESS FAILED:\n  " + "\n  ".join(c.problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
