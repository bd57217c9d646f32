"""The intake's CPU: `Pipeline.process` in-process on the ingest bench's mails, next to a raw floor.

No IMAP, no SMTP, no threads: a fresh SQLite database, the shipped rules and templates, a fixed
clock, and N of `bench/ingest.py`'s mails (the issue-3 mix: `announce_new = false`) through
`Pipeline.process`, timed with `time.process_time`. The floor, measured in the same run on the
same mails: `mailparser.parse_from_bytes` and one `email.message.EmailMessage` acknowledgement
built and turned into bytes (what (b) of ingest.py does per mail, without the network).

    python bench/intake_cpu.py [--mails 1000] [--runs 5] [--announce-new] [--senders N] [--profile FILE]
    python bench/intake_cpu.py --dump FILE      # every row and outgoing mail, normalised, for a diff
    python bench/intake_cpu.py --startup        # wall and CPU of `--version` and of `once` on an empty INBOX

`--dump` also runs the test corpus and a few conversations (replies, member commands), so that a
diff of two dumps shows any change in what is stored or sent (Message-IDs and secrets numbered
in order of appearance, everything else as it is).
"""

from __future__ import annotations

import argparse
import cProfile
import email
import itertools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import mailparser

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inboxd import mailout, tracker  # noqa: E402
from inboxd.checks import check_everything  # noqa: E402
from inboxd.clock import FixedClock  # noqa: E402
from inboxd.config import load_config  # noqa: E402
from inboxd.localconfig import write_local_config  # noqa: E402
from inboxd.models import db, open_database  # noqa: E402
from inboxd.pipeline import Pipeline  # noqa: E402
from ingest import make_mails, plain_ack  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def from_senders(mails: list[bytes], senders: int) -> list[bytes]:
    """The mails, the i-th from the sender of mail i mod `senders`: several requests per sender, as in the field."""
    line = re.compile(rb"^From: .*$", re.MULTILINE)
    froms = [line.search(raw).group() for raw in mails[:senders]]  # type: ignore[union-attr]
    return [line.sub(lambda _, sender=froms[i % senders]: sender, raw, count=1) for i, raw in enumerate(mails)]


def pipeline(work: Path, announce_new: bool) -> Pipeline:
    """A Pipeline on a fresh SQLite database in `work`, as `inboxd once` builds it."""
    path = write_local_config(work, 1143, 1025, "inboxd", "secret", batch_size=100,
                              facilities=("ana@example.org", "bo@example.org"),
                              extra=f"[service]\nannounce_new = {str(announce_new).lower()}\n")
    config = load_config(path)
    rules, renderer = check_everything(config)
    open_database(config.database_url)
    return Pipeline(config, rules, renderer, FixedClock(NOW))


def intake_ms(mails: list[bytes], announce_new: bool, profile: cProfile.Profile | None = None) -> float:
    """CPU ms per mail of `Pipeline.process` on a fresh database."""
    with tempfile.TemporaryDirectory() as tmp:
        pipe = pipeline(Path(tmp), announce_new)
        start = time.process_time()
        if profile is not None:
            profile.enable()
        for uid, raw in enumerate(mails, 1):
            pipe.process(raw, uid)
        if profile is not None:
            profile.disable()
        spent = time.process_time() - start
        db.close()
    return spent * 1000 / len(mails)


def floor_ms(mails: list[bytes]) -> float:
    """CPU ms per mail of the raw floor: parse, and one small acknowledgement built as bytes."""
    start = time.process_time()
    for raw in mails:
        plain_ack(mailparser.parse_from_bytes(raw))
    return (time.process_time() - start) * 1000 / len(mails)


# ---------------------------------------------------------------------------------------------
# --dump: what was stored and sent, normalised, for a diff between two trees.

_OUR_ID = re.compile(r"<[0-9.]+\.inboxd@example\.org>")


def _reply(to: EmailMessage, sender: str, body: str, number: int) -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"] = sender, to["Reply-To"]
    mail["Subject"] = "Re: " + " ".join(str(to["Subject"]).split())
    mail["Date"] = "Mon, 23 Nov 2026 11:00:00 +0100"
    mail["Message-ID"] = f"<dump-reply-{number}@example.org>"
    mail["In-Reply-To"] = mail["References"] = to["Message-ID"]
    mail.set_content(f"{body}\n\nOn Monday, IT Help wrote:\n> earlier text\n")
    return mail.as_bytes()


def dump(path: Path, count: int) -> None:
    """Run the bench's mails, the corpus and some conversations; write every row and mail, normalised."""
    random.seed(15)  # MIME boundaries, of the mails and of ours, are drawn from it
    secrets = (f"{n:032x}" for n in itertools.count(1))
    tracker.new_secret = lambda: next(secrets)  # type: ignore[attr-defined]
    numbers = itertools.count(1)  # the replies quote our Message-IDs: random ones would change their sizes
    mailout.make_msgid = lambda idstring, domain: f"<{next(numbers)}.{idstring}@{domain}>"  # type: ignore[attr-defined]
    corpus = sorted((REPO / "tests" / "data" / "corpus").rglob("*.eml"))
    mails = make_mails(count, "dump") + [p.read_bytes() for p in corpus]
    mails.append(make_mails(1, "dump-long")[0].replace(
        b"Subject: ", b"Subject: =?utf-8?q?L=C3=A4ngere_Betreffzeile_mit_Umlauten_=C3=BC=C3=B6=C3=A4?= " * 6, 1))
    mails += from_senders(make_mails(200, "dump-mix"), 40)  # several requests per sender: the flood caps' counts
    for first in make_mails(6, "dump-again"):  # the same text again, under other subjects
        mails += [first.replace(b"Subject: ", prefix, 1).replace(b"@mail.example.org>", f".{n}@x>".encode(), 1)
                  for n, prefix in enumerate((b"Subject: ", b"Subject: Re: ", b"Subject: AW: [IT-1] ", b"Subject: x"))]
    from inboxd.models import Event, Item, Message, Notice, Outbox
    with tempfile.TemporaryDirectory() as tmp:
        for announce in (False, True):
            pipe = pipeline(Path(tmp) / str(announce), announce)
            for uid, raw in enumerate(mails, 1):
                pipe.process(raw, uid)
            for n, row in enumerate(Outbox.select().where(Outbox.kind.in_(["ack", "assigned", "new_request"]))
                                    .order_by(Outbox.id).limit(60)):
                sent = email.message_from_bytes(bytes(row.raw))
                who = sent["To"] if row.kind == "ack" else "ana@example.org"
                words = ["Thanks, that is all I know.", "#take", "#done fixed it", "#waiting", "#eta friday",
                         "Any news?", "#priority high\n#note checked cables"][n % 7]
                pipe.process(_reply(sent, who, words, n), 10_000 + n)  # type: ignore[arg-type]
            rows = []
            for model in (Item, Message, Event, Notice, Outbox):
                for values in model.select().order_by(model.id).dicts():
                    rows.append({"table": model.__name__,
                                 **{k: bytes(v).decode("latin-1") if isinstance(v, (bytes, memoryview)) else v
                                    for k, v in values.items()}})
            db.close()
            text = json.dumps(rows, default=str, indent=0, sort_keys=True)
            ids: dict[str, str] = {}
            text = _OUR_ID.sub(lambda m, ids=ids: ids.setdefault(m.group(), f"<ours-{len(ids)}>"), text)
            with open(path, "a" if announce else "w", encoding="utf-8") as out:
                out.write(text + "\n")
    print(f"{len(mails)} mails twice (announce_new off and on), {path.stat().st_size} bytes written to {path}")


def startup(runs: int) -> None:
    """Wall and CPU seconds of `inboxd --version`, and of `inboxd once` on an empty INBOX and on one new request."""
    from inboxd.servers import SmtpCapture, append_messages
    from ingest import _env, _inboxd, pick_server

    def timed(command: list[str], cwd: Path, before: Callable[[], object] = lambda: None) -> tuple[float, float]:
        before()
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"error: {' '.join(command)} failed")
        return time.perf_counter() - start, usage.ru_utime + usage.ru_stime

    with tempfile.TemporaryDirectory() as tmp, pick_server("auto") as server, SmtpCapture.spawn(Path(tmp)) as smtp:
        work = Path(tmp) / "inboxd"
        config = write_local_config(work, server.port, smtp.port, server.user, server.password)
        server.reset()
        requests = iter(make_mails(runs + 1, f"startup{time.time_ns()}"))
        for name, command, before in (
                ("--version", [sys.executable, "-m", "inboxd.cli", "--version"], lambda: None),
                ("once, empty INBOX", _inboxd(config, "once"), lambda: None),
                ("once, one new request (start-up to its first item)", _inboxd(config, "once"),
                 lambda: append_messages(server, [next(requests)]))):
            timed(command, work, before)  # warm the file cache
            walls, cpus = zip(*(timed(command, work, before) for _ in range(runs)), strict=True)
            print(f"{name}: wall {statistics.median(walls):.3f} s ({min(walls):.3f}-{max(walls):.3f}), "
                  f"CPU {statistics.median(cpus):.3f} s, median of {runs}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--announce-new", action="store_true")
    parser.add_argument("--senders", type=int, help="this many distinct senders (default: one per mail)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of one more run here")
    parser.add_argument("--startup", action="store_true", help="time start-up instead (needs Dovecot or pymap)")
    parser.add_argument("--dump", type=Path, help="write rows and mails, normalised, here (and time nothing)")
    args = parser.parse_args(argv)
    if args.startup:
        startup(args.runs)
        return 0
    if args.dump:
        dump(args.dump, min(args.mails, 300))
        return 0
    mails = make_mails(args.mails, "cpu")
    if args.senders:
        mails = from_senders(mails, args.senders)
    floors, intakes = [], []
    for _ in range(args.runs):  # alternated, so that a busy moment of the machine hits both
        floors.append(floor_ms(mails))
        intakes.append(intake_ms(mails, args.announce_new))
    floor, intake = statistics.median(floors), statistics.median(intakes)
    senders = f" from {args.senders} senders" if args.senders else ""
    print(f"{args.mails} mails{senders}, {args.runs} runs, medians (ranges): "
          f"raw floor {floor:.3f} ms/mail ({min(floors):.3f}-{max(floors):.3f}), "
          f"Pipeline.process {intake:.3f} ms/mail ({min(intakes):.3f}-{max(intakes):.3f}), "
          f"{intake / floor:.2f}x the floor")
    if args.profile:
        profile = cProfile.Profile()
        intake_ms(mails, args.announce_new, profile)
        profile.dump_stats(args.profile)
        print(f"profile written to {args.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
