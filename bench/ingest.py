"""Ingest benchmark: inboxd's end-to-end rate against the raw floor, in two configurations, in one run.

Loads N request mails into a real IMAP server (Dovecot where available, else pymap) and,
against an SMTP capture running in a separate process that files every mail it receives,
measures:

  (a) raw fetch+parse: imapclient UID FETCH BODY.PEEK[] in batches of 100 over one connection,
      each mail parsed with mailparser.parse_from_bytes;
  (b) raw pipeline: (a) plus one plain smtplib acknowledgement per mail (built with
      email.message), sent sequentially over one SMTP connection, until the capture has filed
      all N — the floor of what any tracker must do;
  (c) `inboxd once` as a subprocess with a fresh config and database, from its start until it
      has exited and the capture has filed every mail it sent;

(c) in two configurations, each right after a (b) of its own: "default", the shipped one
(announcements to the team on, the rules' `assign`), and "acks only", exactly one mail per
request (`announce_new = false` and the shipped rules without their `assign =` lines). It prints
requests/s, mails out/s, c/b, CPU and peak RSS of (c) against the goals of issue 15.

The mailbox is field-like by default (`--field`: Dovecot's default fsync, several requests per
sender, a size mix with attachments and HTML-only mails) or the shape of the earlier figures
(`--lab`: `mail_fsync = never`, all-distinct senders, 1.2 kB mails). Every phase reads the same
N mails, freshly appended to an emptied INBOX. Exits 0 even when a goal is missed (it is a
benchmark), non-zero when the result is wrong (items, acks, other mail, mailbox state).

    python bench/ingest.py [--mails N] [--config default|acks|both] [--field|--lab]
                           [--server dovecot|pymap|auto] [--profile FILE] [--json] [--smaps]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import re
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, formataddr, getaddresses, make_msgid
from pathlib import Path
from typing import Any

import mailparser
from inboxd.localconfig import SHIPPED, write_local_config
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
CONFIGS = ("default", "acks")
CONFIG_TITLES = {"default": "default (shipped: announcements on, the rules' assign)",
                 "acks": "acks only (announce_new = false, no assign: one mail per request)"}
GOAL_RATIO = {"default": 0.60, "acks": 0.90}  # c/b, issue 15
GOAL_RSS_MB = 150.0  # peak RSS of the inboxd process, issues 3 and 15
TEAM = "help@example.org"
MEMBERS = ("ana@example.org", "bo@example.org")

# ---------------------------------------------------------------------------------------------
# The mails: realistic requests with subjects that the shipped rules route differently.

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
    sent = datetime(2026, 11, 23, 7, 30, tzinfo=UTC)
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


# The field mix. How many requests one person sends (weight, count): most once or twice, a few
# five to ten times; about 3.25 on average, so 1,000 requests come from ~300 people. Ten stays
# under `[limits] automatic_per_sender` (20 an hour), so every request is acknowledged.
PER_SENDER = [(30, 1), (20, 2), (14, 3), (10, 4), (8, 5), (6, 6), (5, 7), (3, 8), (2, 9), (2, 10)]
BOARD_SHARE = 0.07  # of the people: board members, whose outages are urgent
HTML_ONLY_SHARE = 0.04  # of the mails: a client that sends HTML alone
ATTACHMENT_SHARE = 0.15  # of the mails: a screenshot, photo or log of 6-36 kB (10-50 kB mails)
ALTERNATIVE_SHARE = 0.25  # of the other mails: text with an HTML alternative
GREETINGS = ["Hello IT team,", "Hi all,", "Dear IT Help,", "Hallo zusammen,", "Hi,", "Good morning,"]
DEPARTMENTS = ["Sales & Marketing", "Finance", "Research", "Human Resources", "Logistics", "Legal"]
CLIENTS = [("User-Agent", "Mozilla Thunderbird 128.4"), ("X-Mailer", "Microsoft Outlook 16.0"),
           ("X-Mailer", "Apple Mail (2.3774)"), ("User-Agent", "Roundcube Webmail/1.6.9")]
DETAILS = ["My asset tag is AT-{tag}.", "The device has inventory number AT-{tag}.",
           "(For your records: asset AT-{tag}.)", "It is the one with the sticker AT-{tag}."]
DISCLAIMER = (
    "--\nExample Org GmbH · Musterstraße 1 · 10115 Berlin · Amtsgericht Charlottenburg HRB 123456\n"
    "This e-mail may contain confidential and/or privileged information. If you are not the intended "
    "recipient (or have received this e-mail in error) please notify the sender immediately and "
    "destroy this e-mail. Any unauthorised copying, disclosure or distribution of the material in "
    "this e-mail is strictly forbidden.\n")
FILES = [("screenshot.png", "image", "png"), ("photo.jpg", "image", "jpeg"), ("error.log", "text", "plain")]


@dataclass(frozen=True)
class Person:
    """One requester of the field mix: the same address, mail client and signature in each of their mails."""

    name: str
    address: str
    client: tuple[str, str]
    signature: str
    board: bool


def _people(count: int, rng: random.Random) -> list[Person]:
    """One requester per request: people drawn from the PER_SENDER mix, in a shuffled order."""
    weights, sizes = zip(*PER_SENDER, strict=True)
    people: list[Person] = []
    order: list[int] = []
    while len(order) < count:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        board = rng.random() < BOARD_SHARE
        local = f"{first}.{last}".lower().replace("ö", "oe").replace("ë", "e").replace("ü", "ue")
        address = f"{local}{len(people)}@{'board.' if board else ''}example.org"
        signature = (f"Best regards,\n{first} {last}\n{rng.choice(DEPARTMENTS)}, ext. {rng.randint(1000, 9999)}\n"
                     + (DISCLAIMER if rng.random() < 0.4 else ""))
        order += [len(people)] * rng.choices(sizes, weights)[0]
        people.append(Person(f"{first} {last}", address, rng.choice(CLIENTS), signature, board))
    order = order[:count]
    rng.shuffle(order)
    return [people[k] for k in order]


def _headers(i: int, run: str, when: datetime, rng: random.Random) -> list[tuple[str, str]]:
    """What a mail picks up on its way: Received lines, a DKIM signature, the receiver's verdict."""
    date = format_datetime(when)
    hops = [f"from mx{rng.randint(1, 3)}.example.org (mx.example.org [192.0.2.{i % 250 + 1}]) by "
            f"mail.example.org with ESMTPS id {run}{i:06d}; {date}"]
    hops += [f"from relay{k}.example.org (relay{k}.example.org [198.51.100.{rng.randint(1, 250)}]) by "
             f"mx.example.org with ESMTP id {rng.getrandbits(48):012x}; {date}" for k in range(rng.randint(0, 2))]
    signature = "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", k=344))
    signature = " ".join(signature[k:k + 64] for k in range(0, len(signature), 64))  # folds as signers fold it
    return [("Received", hop) for hop in hops] + [
        ("DKIM-Signature", f"v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=mail2026; "
                           f"t={int(when.timestamp())}; h=from:to:subject:date:message-id; "
                           f"bh={signature[:43]}=; b={signature}"),
        ("Authentication-Results", "mail.example.org; dkim=pass header.d=example.org; spf=pass "
                                   "smtp.mailfrom=example.org; dmarc=pass header.from=example.org")]


def make_field_mails(count: int, run: str, seed: int = 15) -> list[bytes]:
    """``count`` request mails as a team's mailbox has them: several per sender, 1-3 kB, some 10-50 kB, a few HTML-only.

    No two mails of one sender share their subject or their text (the duplicate rule of
    `inboxd/caps.py` would rightly withhold the second acknowledgement).
    """
    rng = random.Random(seed)
    sent = datetime(2026, 11, 23, 7, 30, tzinfo=UTC)
    subjects_of: dict[str, set[str]] = {}
    mails = []
    for i, person in enumerate(_people(count, rng)):
        kinds = KINDS if person.board else [k for k in KINDS if "X-Priority" not in k[3]]
        _, subjects, _, extra = rng.choices(kinds, [k[0] for k in kinds])[0]
        n, f = rng.randint(1, 499), rng.randint(1, 6)
        used = subjects_of.setdefault(person.address, set())
        subject = rng.choice(subjects).format(n=n, f=f)
        for _ in range(20):
            if subject not in used:
                break
            subject = rng.choice(subjects).format(n=rng.randint(1, 499), f=f)
        if subject in used:
            subject = f"{subject} ({len(used) + 1})"
        used.add(subject)
        when = sent + timedelta(seconds=37 * i)
        mail = EmailMessage()
        for name, value in _headers(i, run, when, rng):
            mail[name] = value
        mail["From"] = formataddr((person.name, person.address))
        mail["To"] = formataddr(("IT Help", TEAM))
        mail["Subject"] = subject
        mail["Date"] = format_datetime(when)
        mail["Message-ID"] = f"<bench-{run}-{i}@mail.example.org>"
        mail[person.client[0]] = person.client[1]
        mail["Content-Language"] = "en-GB"
        for name, value in extra.items():
            mail[name] = value
        paragraphs = [p.format(n=n, f=f) for p in rng.sample(PARAGRAPHS, rng.randint(1, 4))]
        paragraphs.insert(rng.randint(0, len(paragraphs)), rng.choice(DETAILS).format(tag=10000 + i))  # text unique
        text = f"{rng.choice(GREETINGS)}\n\n" + "\n\n".join(paragraphs) + f"\n\n{person.signature}"
        html = "<html><body>" + "".join(f"<p>{p}</p>" for p in text.split("\n\n")) + "</body></html>"
        shape = rng.random()
        if shape < HTML_ONLY_SHARE:
            mail.set_content(html, subtype="html")
        else:
            mail.set_content(text)
            if shape < HTML_ONLY_SHARE + ATTACHMENT_SHARE:
                name, maintype, subtype = rng.choice(FILES)
                size = rng.randint(6_000, 36_000)
                data = (rng.randbytes(size) if maintype == "image" else
                        "".join(f"2026-11-23 07:{k % 60:02d}:{k % 57:02d} ERROR device not ready (0x8007045D)\n"
                                for k in range(size // 56)).encode())
                mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
            elif rng.random() < ALTERNATIVE_SHARE:
                mail.add_alternative(html, subtype="html")
        mails.append(mail.as_bytes())
    return mails


def describe(mails: list[bytes]) -> dict[str, Any]:
    """The mailbox in figures: senders, the largest count from one, sizes, shapes."""
    parser = BytesHeaderParser()
    senders: Counter[str] = Counter()
    html_only = with_file = 0
    for raw in mails:
        headers = parser.parsebytes(raw)
        senders[getaddresses(headers.get_all("From", []))[0][1].lower()] += 1
        html_only += headers.get_content_type() == "text/html"
        with_file += headers.get_content_type() == "multipart/mixed"
    sizes = sorted(map(len, mails))
    return {"senders": len(senders), "most_from_one_sender": max(senders.values()),
            "mean_bytes": round(sum(sizes) / len(sizes)), "median_bytes": sizes[len(sizes) // 2],
            "under_3kb": sum(s < 3072 for s in sizes), "from_10kb": sum(s >= 10240 for s in sizes),
            "largest_bytes": sizes[-1], "with_attachment": with_file, "html_only": html_only}


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
    ack["Date"] = format_datetime(datetime.now(UTC))
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
    peak_rss_mb: float = 0.0  # the larger of the two below: what the goal is judged on
    largest_process_rss_mb: float = 0.0  # VmHWM of the largest of inboxd's processes
    processes_rss_mb: float = 0.0  # inboxd and its child processes together, sampled, shared pages once
    processes_rss_sum_mb: float = 0.0  # their RSS summed: pages they share (the interpreter, libraries) in each
    processes: int = 0  # the most processes seen at once (a delivery process counts)
    returncode: int = 0
    items: int = 0
    acked_items: int = 0
    captured: int = 0
    captured_acks: int = 0
    captured_assigned: int = 0  # to an item's owner
    captured_announcements: int = 0  # `new_request` to a member of an unowned item's queue
    captured_reminders: int = 0  # the sweep after reading: to the team about an item with a notice
    captured_unaccounted: int = 0  # any other mail: must be none
    inbox_left: int = 0
    processed: int = 0
    queues: dict[str, int] = field(default_factory=dict)
    first_item_seconds: float = 0.0  # from the process start to the first item: start-up
    acked_during_ingest: int = 0  # acknowledged before the last item was created
    ack_tail_seconds: float = 0.0  # from the last item created to the last acknowledgement
    breakdown: dict[str, Any] = field(default_factory=dict)  # --smaps: per process, kB by kind (Breakdown)
    problems: list[str] = field(default_factory=list)


def _inboxd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "inboxd.cli", "--config", str(config), *args]


TREE = [REPO]  # the checkout whose inboxd (c) runs: this one, or --tree's
SMAPS = [False]  # --smaps: break (c)'s memory down per process and kind


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(TREE[0]), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _folder_count(server: ImapServer, folder: str) -> int:
    with server.connect() as client:
        if not client.folder_exists(folder):
            return 0
        return int(client.select_folder(folder, readonly=True)[b"EXISTS"])


ROLLUP_KINDS = ("Rss", "Anonymous", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")
STATUS_KINDS = ("RssAnon", "RssFile", "RssShmem", "Threads")
MAPS_EVERY = 10  # samples: the whole of /proc/PID/smaps is read every 10th (200 ms), smaps_rollup every time


def role_of(pid: int) -> str:
    """Which of inboxd's processes ``pid`` is, from its command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            command = fh.read()
    except OSError:
        return "?"
    if b"resource_tracker" in command:  # multiprocessing's: inboxd before its delivery process was a plain one
        return "resource tracker"
    return "delivery" if b"multiprocessing" in command or b"inboxd-delivery" in command else "intake"


def mapping_group(name: str, start: int, flags: str) -> str:
    """What a mapping of /proc/PID/smaps holds, by its name; anonymous ones by their shape."""
    if name == "[heap]":
        return "[heap] (main arena: malloc of the main thread)"
    if name.endswith("-shm"):
        return "sqlite -shm (WAL index)"
    if name.endswith((".db", "-wal")):
        return "sqlite database / WAL file"
    if ".so" in name or name.endswith("python3") or "/python3." in name:
        return "interpreter and libraries (files)"
    if name.startswith("[stack"):
        return "[stack]"
    if name.startswith("["):
        return "[vdso, vvar, …]"
    if name:
        return "other files"
    if start % (64 << 20) == 0 and "w" in flags:  # glibc gives each thread's arena a 64 MiB-aligned heap
        return "anon: malloc arenas of threads"
    return "anon: other (pymalloc arenas, mmapped blocks, thread stacks)"


def smaps_groups(pid: int) -> dict[str, dict[str, int]]:
    """/proc/PID/smaps summed per mapping group: Rss, Anonymous and Private_Dirty in kB."""
    groups: dict[str, dict[str, int]] = {}
    group: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            head = line.split(maxsplit=5)
            if "-" in head[0] and not head[0].endswith(":"):  # "7f..-7f.. rw-p 0 00:00 0   name"
                start = int(head[0].split("-")[0], 16)
                group = groups.setdefault(mapping_group(head[5].strip() if len(head) > 5 else "", start, head[1]), {})
            elif head[0] in ("Rss:", "Anonymous:", "Private_Dirty:"):
                group[head[0][:-1]] = group.get(head[0][:-1], 0) + int(head[1])
    return groups


@dataclass
class Breakdown:
    """One process's memory by kind: the peak of each over the run, and its mappings when its Rss was largest."""

    peak_kb: dict[str, int] = field(default_factory=dict)
    maps_at_peak: dict[str, dict[str, int]] = field(default_factory=dict)
    maps_rss_kb: int = 0

    def take(self, rollup: dict[str, int], status: dict[str, int]) -> None:
        for kind in ROLLUP_KINDS + STATUS_KINDS:
            value = rollup.get(kind, 0) if kind in ROLLUP_KINDS else status.get(kind, 0)
            self.peak_kb[kind] = max(self.peak_kb.get(kind, 0), value)

    def take_maps(self, pid: int) -> None:
        groups = smaps_groups(pid)
        rss = sum(g.get("Rss", 0) for g in groups.values())
        if rss >= self.maps_rss_kb:
            self.maps_rss_kb, self.maps_at_peak = rss, groups


class TreeRss:
    """The peak RSS of a process and its descendants together, sampled from /proc: inboxd may deliver from a child."""

    def __init__(self, pid: int, interval: float = 0.02, breakdown: bool = False) -> None:
        """Prepare (not start) sampling the tree under ``pid`` every ``interval`` seconds (``breakdown``: each too)."""
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_rss_sum = self.most_processes = self.largest = 0
        self.breakdown: dict[str, Breakdown] | None = {} if breakdown else None
        self._samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, rss_sum, count = self.sample()
            self.peak_rss, self.peak_rss_sum = max(self.peak_rss, rss), max(self.peak_rss_sum, rss_sum)
            self.most_processes = max(self.most_processes, count)
            self._stop.wait(self.interval)

    def sample(self) -> tuple[int, int, int]:
        """The RSS in bytes of the process and its descendants now, summed, and how many they are.

        Shared pages counted once: the private pages of each, and the largest shared set of one
        (the others, the same interpreter started again, share the same files). Not PSS, which
        would also divide the pages shared with unrelated processes (ours among them).
        """
        private, shared, rss_sum, count, todo = 0, 0, 0, 0, [self.pid]
        self._samples += 1
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/smaps_rollup") as fh:  # "Rss:  1684 kB" …
                    kb = {f[0].rstrip(":"): int(f[1]) for f in map(str.split, fh.read().splitlines()[1:]) if len(f) > 1}
                private += (kb["Private_Clean"] + kb["Private_Dirty"]) * 1024
                shared = max(shared, (kb["Shared_Clean"] + kb["Shared_Dirty"]) * 1024)
                rss_sum += kb["Rss"] * 1024
                count += 1
                with open(f"/proc/{pid}/status") as fh:  # VmHWM: its own peak, exact even between samples
                    status = {f[0].rstrip(":"): int(f[1]) for f in map(str.split, fh) if len(f) > 1 and f[1].isdigit()}
                self.largest = max(self.largest, status["VmHWM"] * 1024)
                if self.breakdown is not None:
                    mine = self.breakdown.setdefault(f"{role_of(pid)} ({pid})", Breakdown())
                    mine.take(kb, status)
                    if self._samples % MAPS_EVERY == 1:
                        mine.take_maps(pid)
                for task in os.listdir(f"/proc/{pid}/task"):  # a child belongs to the thread that started it
                    with open(f"/proc/{pid}/task/{task}/children") as fh:
                        todo += map(int, fh.read().split())
            except (OSError, ValueError, IndexError, KeyError):
                continue  # gone meanwhile
        return private + shared, rss_sum, count


def write_config(work: Path, server: ImapServer, smtp: SmtpProcess, which: str) -> Path:
    """inboxd's config for (c): the shipped one (two members per queue), or one that sends acknowledgements only."""
    rules, extra = None, ""
    if which == "acks":
        # No `assign =`: no item gets an owner, so nobody gets `assigned`; no announcements either.
        rules = work / "rules"
        rules.mkdir(parents=True)
        for source in sorted((SHIPPED / "rules").glob("*.toml")):
            kept = [line for line in source.read_text().splitlines(keepends=True)
                    if not re.match(r"\s*assign\s*=", line)]
            (rules / source.name).write_text("".join(kept))
        # The shipped VIP rule promises 4 business hours, as long as the owner reminder's lead time:
        # every VIP item would get a reminder from the sweep right after reading. One hour, as the
        # requester's notice has it, keeps that sweep quiet.
        extra = '[service]\nannounce_new = false\nremind_owner_before = "1 business hour"\n'
    return write_local_config(work, server.port, smtp.port, server.user, server.password, rules=rules,
                              batch_size=FETCH_BATCH, retry_seconds=1, facilities=MEMBERS, extra=extra)


def run_inboxd(server: ImapServer, smtp: SmtpProcess, work: Path, expected: int, which: str = "default",
               profile: Path | None = None) -> InboxdRun:
    """`inboxd once` on the INBOX, timed to its exit and the capture's last mail."""
    result = InboxdRun()
    config = write_config(work, server, smtp, which)
    settings = tomllib.loads(config.read_text())
    members = {queue: tuple(addresses) for queue, addresses in settings["queues"].items()}
    team_addresses = {a for addresses in members.values() for a in addresses} | {settings["team"]["lead"]}
    announce = settings.get("service", {}).get("announce_new", True)
    command = _inboxd(config, "once")
    if profile is not None:  # cProfile of the main thread: the others (sending) are not in it
        command[1:3] = ["-m", "cProfile", "-o", str(profile), "-m", "inboxd.cli"]
    log = work / "inboxd.log"
    with open(log, "wb") as out:
        start = time.time()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=work, env=_env())
        try:
            # wait4 on this child alone: its CPU (and that of the children it waited for), not the
            # capture's or ours; its RSS and its children's together are sampled beside it
            with TreeRss(proc.pid, breakdown=SMAPS[0]) as tree:
                _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        exited = time.time()
    proc.returncode = result.returncode = os.waitstatus_to_exitcode(status)
    result.exit_seconds = exited - start
    result.cpu_seconds = usage.ru_utime + usage.ru_stime
    # Not ru_maxrss: a process forked from this one keeps our high-water mark through exec (Linux
    # records the old memory's peak then), so at 10,000 mails it reported the bench's own 110-133 MB.
    result.largest_process_rss_mb = tree.largest / 1e6
    result.processes_rss_mb, result.processes_rss_sum_mb = tree.peak_rss / 1e6, tree.peak_rss_sum / 1e6
    result.processes = tree.most_processes
    result.breakdown = {name: asdict(b) for name, b in (tree.breakdown or {}).items()}
    result.peak_rss_mb = max(result.largest_process_rss_mb, result.processes_rss_mb)
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        result.problems.append(f"inboxd once exited with {result.returncode}:\n{tail}")
        return result

    # Correctness, untimed: the items, every captured mail accounted for, the mailbox.
    listing = subprocess.run(_inboxd(config, "items", "--all", "--json"), capture_output=True,
                             cwd=work, env=_env(), timeout=300)
    if listing.returncode != 0:
        result.problems.append(f"inboxd items failed: {listing.stderr.decode(errors='replace')[-2000:]}")
        return result
    items = json.loads(listing.stdout)
    result.items = len(items)
    result.acked_items = sum(1 for item in items if item["acknowledged_at"])
    for item in items:
        result.queues[item["queue"]] = result.queues.get(item["queue"], 0) + 1
    requester = {item["ref"]: item["requester"].lower() for item in items}
    # The team mail each item must send: `assigned` to its owner, or (announcements on) one
    # `new_request` to each member of its queue, each alone (their own reply address).
    owner = {item["ref"]: item["owner"].lower() for item in items if item["owner"]}
    team_due = {ref: sorted([owner[ref]] if ref in owner else members.get(queue, ()) if announce else [])
                for ref, queue in ((item["ref"], item["queue"]) for item in items)}
    created = [datetime.fromisoformat(item["created_at"]) for item in items]
    acked = [datetime.fromisoformat(item["acknowledged_at"]) for item in items if item["acknowledged_at"]]
    if created and acked:
        result.acked_during_ingest = sum(1 for moment in acked if moment <= max(created))
        result.ack_tail_seconds = round(max(0.0, (max(acked) - max(created)).total_seconds()), 3)
        result.first_item_seconds = round(min(created).timestamp() - start, 3)
    due = len(items) + sum(map(len, team_due.values()))
    with sqlite3.connect(f"file:{work / 'inboxd.db'}?mode=ro", uri=True) as db:  # the sweep's notices
        noticed = {settings["team"]["ref_prefix"] + f"-{item}" for (item,) in db.execute(
            "SELECT DISTINCT item_id FROM notice WHERE item_id IS NOT NULL")}
    acks: dict[str, int] = {}
    team: dict[str, list[str]] = {}
    seen: set[str] = set()
    last_mail = exited
    parser = BytesHeaderParser()
    deadline = time.time() + 30
    while True:  # the capture has filed everything inboxd got a 250 for; poll only to be sure
        for entry in os.scandir(smtp.directory):
            if entry.name in seen or entry.name.startswith(".") or not entry.name.endswith(".eml"):
                continue
            seen.add(entry.name)
            last_mail = max(last_mail, entry.stat().st_mtime)
            with open(entry.path, "rb") as fh:
                headers = parser.parse(fh)
            ref = headers.get("X-Inboxd-Ref", "")
            to = sorted(a.lower() for _, a in getaddresses(headers.get_all("To", [])))
            if ref in requester and to == [requester[ref]] and headers.get("In-Reply-To"):
                acks[ref] = acks.get(ref, 0) + 1
            elif ref in team_due and len(to) == 1 and team_due[ref].count(to[0]) > team.get(ref, []).count(to[0]):
                team.setdefault(ref, []).append(to[0])
                if ref in owner:
                    result.captured_assigned += 1
                else:
                    result.captured_announcements += 1
            elif ref in noticed and set(to) <= team_addresses:
                result.captured_reminders += 1
            else:
                result.captured_unaccounted += 1
        if len(seen) >= due or time.time() > deadline:
            break
        time.sleep(0.01)
    result.captured = len(seen)
    result.captured_acks = sum(acks.values())
    result.seconds = last_mail - start
    result.inbox_left = _folder_count(server, "INBOX")
    result.processed = _folder_count(server, "Processed")

    if result.items != expected:
        result.problems.append(f"{result.items} items, expected {expected}")
    if missing := sorted(set(requester) - set(acks)):
        result.problems.append(f"{len(missing)} item(s) without an acknowledgement: {missing[:5]}")
    if doubled := sorted(ref for ref, times in acks.items() if times > 1):
        result.problems.append(f"{len(doubled)} item(s) acknowledged more than once: {doubled[:5]}")
    if result.acked_items != result.items:
        result.problems.append(f"only {result.acked_items} of {result.items} items have acknowledged_at")
    if wrong := sorted(ref for ref, due_to in team_due.items() if sorted(team.get(ref, [])) != due_to):
        result.problems.append(f"{len(wrong)} item(s) whose team mail is not one to each member due "
                               f"(owner, or the queue's members): {wrong[:5]}")
    if result.captured_unaccounted:
        result.problems.append(f"{result.captured_unaccounted} captured mail(s) neither an acknowledgement, "
                               f"team mail about an item nor a reminder from the sweep")
    if which == "acks" and result.captured != result.captured_acks:
        result.problems.append(f"acks only: {result.captured - result.captured_acks} mail(s) besides the "
                               f"acknowledgements")
    if result.inbox_left or result.processed != expected:
        result.problems.append(f"mailbox: INBOX has {result.inbox_left} (expected 0), Processed has "
                               f"{result.processed} (expected {expected})")
    return result


# ---------------------------------------------------------------------------------------------

def pick_server(name: str, fsync: str | None = "never") -> ImapServer:
    """The IMAP server to measure on; a Dovecot with this `mail_fsync` (None: Dovecot's own default)."""
    if name == "dovecot":
        if not DovecotServer.available():
            raise SystemExit("error: Dovecot is not available (needs root and dovecot-imapd)")
        return DovecotServer(fsync=fsync)
    if name == "pymap":
        return PymapServer()
    server = imap_server_for_tests()
    if isinstance(server, DovecotServer):
        server.fsync = fsync
    return server


def server_label(server: ImapServer) -> str:
    if isinstance(server, DovecotServer):
        version = subprocess.run([server.binary, "--version"], capture_output=True, text=True).stdout.split()
        return f"Dovecot {version[0] if version else '?'}"
    return "pymap (in-memory dict backend)"


def load(server: ImapServer, mails: list[bytes]) -> None:
    """An emptied INBOX holding exactly ``mails``."""
    with server.connect() as client:  # in chunks first: reset's one UID STORE of all is too long for Dovecot at 20,000
        client.select_folder("INBOX")
        uids = client.search("ALL")
        for start in range(0, len(uids), 5000):
            client.delete_messages(uids[start:start + 5000])
        client.expunge()
    server.reset()
    if append_messages(server, mails) != len(mails) or _folder_count(server, "INBOX") != len(mails):
        raise SystemExit("error: appending the mails to the INBOX failed")


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def raw_pipeline(server: ImapServer, smtp: SmtpProcess, mails: list[bytes]) -> float:
    """(b) on a freshly loaded INBOX: its seconds, until the capture has filed every acknowledgement."""
    n, captured = len(mails), smtp.directory
    clear_files(captured)
    load(server, mails)
    t = time.perf_counter()
    with smtplib.SMTP(smtp.host, smtp.port, timeout=60) as client:
        def acknowledge(parsed: mailparser.MailParser) -> None:
            to, raw = plain_ack(parsed)
            client.sendmail(TEAM, [to], raw)
        got = fetch_and_parse(server, acknowledge)
    if not wait_files(captured, n, timeout=60):
        raise SystemExit(f"error: (b) the capture filed only {count_files(captured)} of {n} mails")
    seconds = time.perf_counter() - t
    if got != n or count_files(captured) != n:
        raise SystemExit(f"error: (b) sent {got}, captured {count_files(captured)}, expected {n}")
    clear_files(captured)
    return seconds


def measure(server: ImapServer, smtp: SmtpProcess, mails: list[bytes], work: Path, which: str,
            profile: Path | None, say: Callable[[str], None]) -> dict[str, Any]:
    """(b), then (c) in one configuration: the figures of the pair."""
    n = len(mails)
    b_seconds = raw_pipeline(server, smtp, mails)
    say(f"{which}: (b) {rate(n, b_seconds):.0f} requests/s")
    load(server, mails)
    c = run_inboxd(server, smtp, work, n, which, profile)
    b = rate(n, b_seconds)
    cr = rate(n, c.seconds) if not c.problems else 0.0
    ratio = cr / b if b else 0.0
    say(f"{which}: (c) {cr:.0f} requests/s, {rate(c.captured, c.seconds):.0f} mails out/s")
    return {
        "b_raw_pipeline_per_s": round(b, 1), "b_seconds": round(b_seconds, 3),
        "c_requests_per_s": round(cr, 1), "c_mails_out_per_s": round(rate(c.captured, c.seconds), 1),
        "c_mails_per_request": round(c.captured / n, 3), "c_seconds": round(c.seconds, 3),
        "c_process_seconds": round(c.exit_seconds, 3), "c_cpu_seconds": round(c.cpu_seconds, 3),
        "c_over_b": round(ratio, 4), "goal_c_over_b": GOAL_RATIO[which], "c_over_b_pass": ratio >= GOAL_RATIO[which],
        "peak_rss_mb": round(c.peak_rss_mb, 1), "goal_peak_rss_mb": GOAL_RSS_MB,
        **{k: round(getattr(c, k), 1) for k in ("largest_process_rss_mb", "processes_rss_mb", "processes_rss_sum_mb")},
        "peak_rss_pass": c.peak_rss_mb < GOAL_RSS_MB, "profile": str(profile) if profile else None,
        **{k: v for k, v in asdict(c).items()
           if k not in ("seconds", "exit_seconds", "cpu_seconds", "peak_rss_mb", "largest_process_rss_mb",
                        "processes_rss_mb", "processes_rss_sum_mb", "problems")},
        "correct": not c.problems, "problems": c.problems,
    }


def profile_path(profile: Path | None, which: str, both: bool) -> Path | None:
    """Where (c) of this configuration writes its profile: FILE, or FILE-default / FILE-acks for both."""
    if profile is None or not both:
        return profile
    return profile.with_name(f"{profile.stem}-{which}{profile.suffix}")


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(figures: dict[str, Any]) -> None:
    box = figures["mailbox"]
    print(f"inboxd ingest benchmark: {figures['mails']} mails, {figures['imap_server']}, {figures['shape']} mailbox, "
          f"SMTP capture in a separate process filing each mail, {figures['cpus']} CPU(s), "
          f"load {figures['load_at_start']:.2f} at start")
    print(f"mailbox: {box['senders']} senders (at most {box['most_from_one_sender']} requests from one), "
          f"{box['mean_bytes'] / 1000:.1f} kB mean, {box['median_bytes'] / 1000:.1f} kB median, "
          f"{box['under_3kb']} under 3 kB, {box['from_10kb']} of 10 kB or more "
          f"({box['with_attachment']} with a file), {box['html_only']} HTML-only; Dovecot mail_fsync: "
          f"{figures['dovecot_fsync'] or '-'}")
    print(f"(a) raw fetch+parse:            {figures['a_fetch_parse_per_s']:9.1f} mails/s  "
          f"({figures['a_seconds']:.3f} s)")
    for which, c in figures["configs"].items():
        print(f"{CONFIG_TITLES[which]}:")
        print(f"  (b) raw pipeline (+SMTP ack): {c['b_raw_pipeline_per_s']:9.1f} requests/s  ({c['b_seconds']:.3f} s)")
        print(f"  (c) inboxd once:              {c['c_requests_per_s']:9.1f} requests/s  "
              f"{c['c_mails_out_per_s']:.1f} mails out/s ({c['c_mails_per_request']:.2f} per request; "
              f"{c['c_seconds']:.3f} s; process {c['c_process_seconds']:.3f} s, CPU {c['c_cpu_seconds']:.3f} s)"
              + (f" [profiled to {c['profile']}: slower]" if c["profile"] else ""))
        print(f"  c/b:                          {c['c_over_b'] * 100:9.1f} %           goal >= "
              f"{c['goal_c_over_b'] * 100:.0f} %     {mark(c['c_over_b_pass'])}")
        print(f"  peak RSS (inboxd):            {c['peak_rss_mb']:9.1f} MB          goal < {GOAL_RSS_MB:.0f} MB     "
              f"{mark(c['peak_rss_pass'])}")
        print(f"    ({c['processes']} process(es) together, sampled: {c['processes_rss_mb']:.1f} MB, shared pages "
              f"once ({c['processes_rss_sum_mb']:.1f} MB summed); the largest process "
              f"{c['largest_process_rss_mb']:.1f} MB, VmHWM)")
        for name, b in c["breakdown"].items():
            print(f"    {name}: peak kB " + ", ".join(f"{k} {v}" for k, v in b["peak_kb"].items()))
            for group, kb in sorted(b["maps_at_peak"].items(), key=lambda g: -g[1].get("Rss", 0)):
                print(f"      {kb.get('Rss', 0):7d} kB Rss, {kb.get('Anonymous', 0):7d} anon, "
                      f"{kb.get('Private_Dirty', 0):7d} private dirty  {group}")
        print(f"  items: {c['items']}/{figures['mails']}, acknowledged: {c['captured_acks']} ack(s) for "
              f"{c['items']} item(s), captured: {c['captured']} mail(s) ({c['captured_acks']} acks, "
              f"{c['captured_assigned']} assigned, {c['captured_announcements']} announcements, "
              f"{c['captured_reminders']} reminders, {c['captured_unaccounted']} unaccounted), "
              f"INBOX: {c['inbox_left']}, Processed: {c['processed']}, "
              "queues: " + ", ".join(f"{q} {k}" for q, k in sorted(c["queues"].items())))
        print(f"  inside (c): first item {c['first_item_seconds']:.3f} s after start; {c['acked_during_ingest']} "
              f"of {c['items']} acks sent while inboxd was still creating items; last ack "
              f"{c['ack_tail_seconds']:.3f} s after the last item")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=1000, help="number of mails (default 1000)")
    parser.add_argument("--config", choices=["default", "acks", "both"], default="both",
                        help="(c) in the shipped configuration, with acknowledgements only, or both, each after "
                             "a (b) of its own (default both)")
    parser.add_argument("--announce-new", dest="config", action="store_const", const="default",
                        help="an alias of --config default (the shipped configuration announces new items)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--field", dest="shape", action="store_const", const="field",
                       help="a field-like mailbox (the default): Dovecot's default fsync, ~3 requests per sender, "
                            "1-3 kB mails, some of 10-50 kB with a file, a few HTML-only")
    shape.add_argument("--lab", dest="shape", action="store_const", const="lab",
                       help="the mailbox of the earlier figures: mail_fsync = never, all-distinct senders, 1.2 kB")
    parser.set_defaults(shape="field")
    parser.add_argument("--server", choices=["dovecot", "pymap", "auto"], default="auto",
                        help="IMAP server (auto: Dovecot where available, else pymap; CI=true requires Dovecot)")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="run (c) under `python -m cProfile -o FILE` (with both configurations, x.prof "
                             "becomes x-default.prof and x-acks.prof): "
                             "the main thread only, not the sending one, and slower, so its rates are not figures")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    parser.add_argument("--smaps", action="store_true",
                        help="break (c)'s memory down per process: the peak of each kind of smaps_rollup and status, "
                             "and /proc/PID/smaps by mapping when its RSS was largest (read every 200 ms)")
    parser.add_argument("--tree", type=Path, default=REPO,
                        help="the checkout whose inboxd (c) runs (default this one; the rules and templates are "
                             "this one's): to measure an older inboxd beside this one in the same session")
    args = parser.parse_args(argv)
    TREE[0] = args.tree.resolve()
    SMAPS[0] = args.smaps
    if args.mails < 1:
        parser.error("--mails must be at least 1")
    n, field_shape = args.mails, args.shape == "field"
    configs = CONFIGS if args.config == "both" else (args.config,)
    run = f"{os.getpid()}x{time.time_ns() % 10**9}"
    mails = make_field_mails(n, run) if field_shape else make_mails(n, run)
    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    # As installed by pip, which writes the bytecode of every module: without it each process of (c) compiles
    # inboxd's sources anew at its start (with PYTHONDONTWRITEBYTECODE set, at every start), which the field doesn't.
    compileall.compile_dir(str(TREE[0] / "inboxd"), quiet=1)
    load_at_start = os.getloadavg()[0]

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inboxd-bench-")))
        server = stack.enter_context(pick_server(args.server, fsync=None if field_shape else "never"))
        captured = tmp / "captured"
        captured.mkdir()
        smtp = stack.enter_context(SmtpCapture.spawn(captured))
        label = server_label(server)
        # what Dovecot itself reads from its config, not what we asked for
        fsync = server.setting("mail_fsync") if isinstance(server, DovecotServer) else None
        say(f"{label} on port {server.port}, SMTP capture (separate process, one file per mail) on "
            f"port {smtp.port}; {n} mails, {sum(map(len, mails)) / n:.0f} bytes on average")

        # (a) raw fetch + parse, once
        load(server, mails)
        t = time.perf_counter()
        got = fetch_and_parse(server)
        a_seconds = time.perf_counter() - t
        if got != n:
            raise SystemExit(f"error: (a) read {got} mails, expected {n}")
        say(f"(a) {rate(n, a_seconds):.0f} mails/s")

        results = {which: measure(server, smtp, mails, tmp / f"inboxd-{which}", which,
                                  profile_path(args.profile, which, len(configs) > 1), say)
                   for which in configs}

    problems = [f"{which}: {problem}" for which, c in results.items() for problem in c["problems"]]
    figures = {
        "mails": n, "shape": args.shape, "imap_server": label, "cpus": os.cpu_count(),
        "load_at_start": round(load_at_start, 2),
        "dovecot_fsync": fsync,
        "mailbox": describe(mails),
        "a_fetch_parse_per_s": round(rate(n, a_seconds), 1), "a_seconds": round(a_seconds, 3),
        "configs": results, "correct": not problems, "problems": problems,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_table(figures)
    if problems:
        print("CORRECTNESS FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
