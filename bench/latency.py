"""Latency benchmark: APPEND → acknowledgement of a running `inboxd run`, and inboxd's own share of it, per mail.

Starts a private IMAP server (Dovecot where available, else pymap), an SMTP capture in its own
process (each mail filed under a name that starts with the nanosecond it was stored), and
`inboxd run` with the shipped defaults (announcements on) and JSON logs (times to the
millisecond), its IMAP connection through a relay that notes when the server told it of each
mail. Then it APPENDs N requests at a set interval over one connection, and for each mail takes:

  push:  APPEND → the EXISTS telling inboxd's connection of it, and in the answer to which of its
         commands (IDLE: the server's push; a FETCH, a MOVE …: told in passing);
  ack:   APPEND → the requester's acknowledgement stored by the capture;
  own:   push → ack, inboxd's own share, split by the daemon's log lines into push → "new mail",
         "new mail" → "created" (intake), "created" → stored (delivery), and stored → "sent"
         (the bookkeeping after the SMTP 250, outside the requester's wait);

and prints p50/p90/p99/max of each (the own share also apart for the mails told while idling and
those told in passing), and how many acknowledgements left after a team mail about the same
request; `--json` adds each mail's moments. Exits 0 even when a goal is missed (it is a
benchmark), non-zero when a request was not acknowledged or the arrivals could not be paired
with the APPENDs.

    python bench/latency.py [--mails N] [--interval S] [--server dovecot|pymap|auto] [--json]
"""

from __future__ import annotations

import argparse
import email
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from inboxd.localconfig import write_local_config
from inboxd.servers import HOST, SmtpProcess
from ingest import _env, _inboxd, pick_server, server_label

GOAL_P50_SECONDS = 0.65  # issue 15, with the server's push at about 0.5 s
GOAL_OWN_SHARE_SECONDS = 0.150
GOAL_P99_SECONDS = 2.0
GOAL_MAX_SECONDS = 3.0
SWEEP_WAIT_SECONDS = 75  # a mail left for inboxd's sweep (every 60 s) is a latency figure, not a lost mail
NEW_MAIL = re.compile(r"^IMAP: (\d+) new mail\(s\) in ")
CREATED = re.compile(r"^\S+: created from requester(\d+)@")
SENT_ACK = re.compile(r"^\S+: sent ack to requester(\d+)@")
UNTAGGED = re.compile(rb"^\* (\d+) (EXISTS|EXPUNGE)\r?$")


def request(number: int) -> bytes:
    """One small request from its own sender."""
    return (f"From: Requester {number} <requester{number}@example.org>\r\nTo: help@example.org\r\n"
            f"Subject: Latency probe {number}\r\nMessage-ID: <latency-{number}@example.org>\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nPlease help with probe {number}.\r\n").encode()


@dataclass
class ConnectionView:
    """One IMAP connection of inboxd's, read line by line from both sides: its folder's count, its last command."""

    count: int = 0  # messages in the selected folder, as told so far
    command: str = ""  # "IDLE", "DONE" (IDLE's end), "UID MOVE", … (its tag left off)

    def client_line(self, line: bytes) -> None:
        words = line.decode(errors="replace").upper().split()
        if words == ["DONE"]:
            self.command = "DONE"
        elif len(words) > 1:
            self.command = " ".join(words[1:3] if words[1] == "UID" else words[1:2])

    def server_line(self, line: bytes) -> int:
        """How many mails this line tells of arriving: an EXISTS's rise over the count the EXPUNGEs left."""
        match = UNTAGGED.match(line)
        if not match:
            return 0
        if match[2] == b"EXPUNGE":
            self.count -= 1
            return 0
        arrived, self.count = int(match[1]) - self.count, int(match[1])
        return arrived


class ImapTap:
    """A relay between inboxd and the IMAP server: when inboxd's connection was told of each mail, and in what.

    inboxd moves each mail out as it comes, so its folder's count falls as it rises; the server may tell
    of a mail while inboxd idles (its push) or in the answer to one of inboxd's commands. The mails are
    the bench's own, so no line of theirs looks like an EXISTS.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.told: list[tuple[float, str]] = []  # (when, in the answer to which command) for the 1st, 2nd, … mail
        self.connections = 0
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._relay(client, socket.create_connection((HOST, self.target_port)))

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        self.connections += 1
        for end in (client, server):  # as inboxd's own socket: no Nagle wait for a command's last bytes
            end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        view = ConnectionView()

        def told(line: bytes, now: float) -> None:
            self.told.extend([(now, view.command)] * view.server_line(line))  # "* 3 EXISTS" may tell of two
        threading.Thread(target=self._pump, args=(client, server, lambda line, _: view.client_line(line)),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(server, client, told), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, each_line: Callable[[bytes, float], None]) -> None:
        rest = b""
        try:
            while data := source.recv(65536):
                now = time.time()
                *lines, rest = (rest + data).split(b"\n")
                for line in lines:  # before passing it on: a command is noted before its answer can come
                    each_line(line, now)
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()


def stored_mails(directory: Path) -> list[tuple[float, email.message.Message]]:
    """(when the capture stored it, the mail) for each filed mail."""
    found = []
    for path in directory.glob("*.eml"):
        found.append((int(path.name.split(".")[0]) / 1e9, email.message_from_bytes(path.read_bytes())))
    return sorted(found, key=lambda pair: pair[0])


def log_times(log: Path) -> tuple[list[float], dict[int, float], dict[int, float]]:
    """From inboxd's JSON log: when it noted the 1st, 2nd, … new mail; when it created and acknowledged each request."""
    new_mail: list[float] = []
    created: dict[int, float] = {}
    sent: dict[int, float] = {}
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
            at, message = datetime.fromisoformat(entry["time"]).timestamp(), entry["message"]
        except (ValueError, KeyError, TypeError):  # a line before the config was read, or a traceback
            continue
        if match := NEW_MAIL.match(message):
            new_mail.extend([at] * int(match[1]))
        elif match := CREATED.match(message):
            created.setdefault(int(match[1]), at)
        elif match := SENT_ACK.match(message):
            sent.setdefault(int(match[1]), at)
    return new_mail, created, sent


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1]}


def measure(count: int, interval: float, server_name: str) -> dict:
    """The run: servers, `inboxd run`, the requests, and the figures."""
    figures: dict = {"mails": count, "interval_s": interval, "problems": []}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inboxd-latency-")))
        server = pick_server(server_name)
        stack.enter_context(server)
        figures["imap_server"] = server_label(server)
        captured = work / "captured"
        captured.mkdir()
        smtp = stack.enter_context(SmtpProcess(captured))
        tap = ImapTap(server.port)
        stack.callback(tap.close)
        config = write_local_config(work / "site", tap.port, smtp.port, server.user, server.password,
                                    retry_seconds=1, extra='[log]\nformat = "json"\n')
        log_path = work / "inboxd.log"
        log = log_path.open("w")
        daemon = subprocess.Popen(_inboxd(config, "run"), stdout=log, stderr=subprocess.STDOUT, env=_env(),
                                  stdin=subprocess.DEVNULL)
        stack.callback(daemon.wait, 30)
        stack.callback(daemon.terminate)
        deadline = time.monotonic() + 30
        while "watching with" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        appender = stack.enter_context(server.connect())
        appended: list[float] = []
        for number in range(count):
            appended.append(time.time())
            appender.append("INBOX", request(number))
            time.sleep(interval)
        deadline = time.monotonic() + SWEEP_WAIT_SECONDS
        while time.monotonic() < deadline:
            acks = [m for _, m in stored_mails(captured) if (m["To"] or "").startswith("requester")]
            if len(acks) >= count and len(tap.told) >= count:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # the daemon's "sent" lines come after the capture's 250
        mails = stored_mails(captured)
        ack_at: dict[int, float] = {}
        first_team_mail: dict[str, float] = {}
        refs: dict[int, str] = {}
        for stored, mail in mails:
            if (mail["To"] or "").startswith("requester"):
                number = int(str(mail["In-Reply-To"]).removeprefix("<latency-").split("@")[0])
                ack_at.setdefault(number, stored)
                refs.setdefault(number, str(mail["X-Inboxd-Ref"]))
            elif mail["X-Inboxd-Ref"]:
                first_team_mail.setdefault(str(mail["X-Inboxd-Ref"]), stored)
        pushed = {k: at for k, (at, _) in enumerate(tap.told[:count])}  # the k-th arrival is the k-th APPEND
        new_mail, created, sent = log_times(log_path)
        noted = dict(enumerate(new_mail[:count]))
        both = [k for k in range(count) if k in ack_at and k in pushed]
        split = [k for k in both if k in noted and k in created and k in sent]

        figures["acknowledged"] = len(ack_at)
        figures["mails_out"] = len(mails)
        figures["ack_after_team_mail"] = sum(1 for k, ref in refs.items()
                                            if ref in first_team_mail and first_team_mail[ref] < ack_at[k])
        figures["told_in"] = dict(Counter(command for _, command in tap.told[:count]))
        figures["push_s"] = percentiles([pushed[k] - appended[k] for k in pushed])
        figures["ack_s"] = percentiles([ack_at[k] - appended[k] for k in ack_at])
        figures["own_s"] = percentiles([ack_at[k] - pushed[k] for k in both])
        idling = [k for k in both if tap.told[k][1] == "IDLE"]
        figures["own_idling_s"] = percentiles([ack_at[k] - pushed[k] for k in idling])
        figures["own_in_passing_s"] = percentiles([ack_at[k] - pushed[k] for k in both if k not in idling])
        figures["split_s"] = {
            "push_to_new_mail": percentiles([noted[k] - pushed[k] for k in split]),
            "new_mail_to_created": percentiles([created[k] - noted[k] for k in split]),
            "created_to_stored": percentiles([ack_at[k] - created[k] for k in split]),
            "stored_to_sent_line": percentiles([sent[k] - ack_at[k] for k in split])}
        figures["split_mails"] = len(split)
        moments = {"told": pushed, "new_mail": noted, "created": created, "ack": ack_at, "sent_line": sent}
        figures["per_mail"] = [{"told_in": tap.told[k][1], **{f"{name}_s": round(at[k] - appended[k], 4)
                                                              for name, at in moments.items() if k in at}}
                               for k in both]  # seconds after the APPEND
        if len(ack_at) < count:
            missing = sorted(set(range(count)) - set(ack_at))
            figures["problems"].append(f"{len(missing)} request(s) not acknowledged within {SWEEP_WAIT_SECONDS} s: "
                                       + ", ".join(f"<latency-{k}@example.org>" for k in missing[:5]))
            figures["log_tail"] = log_path.read_text().splitlines()[-15:]
        if len(tap.told) != count or tap.connections != 1:
            figures["problems"].append(f"inboxd's {tap.connections} IMAP connection(s) were told of {len(tap.told)} "
                                       f"arrivals for {count} APPENDs")
        if early := [k for k in pushed if pushed[k] < appended[k]]:
            figures["problems"].append(f"arrivals told before their APPEND (paired wrong): {early[:5]}")
        if len(new_mail) != count:
            figures["problems"].append(f"the daemon logged {len(new_mail)} new mails for {count} APPENDs")
    figures["correct"] = not figures["problems"]
    return figures


def report(f: dict) -> str:
    def row(name: str, p: dict[str, float]) -> str:
        return (f"{name:<42} p50 {p['p50']:.3f} s   p90 {p['p90']:.3f} s   p99 {p['p99']:.3f} s   "
                f"max {p['max']:.3f} s")

    def verdict(value: float, goal: float) -> str:
        return "PASS" if value <= goal else "MISS"
    ack, own, split, idling = f["ack_s"], f["own_s"], f["split_s"], f["told_in"].get("IDLE", 0)
    return "\n".join([
        f"inboxd latency benchmark: {f['mails']} requests every {f['interval_s']} s, {f['imap_server']}, "
        f"shipped defaults (announcements on), {f['mails_out']} mails out",
        row("(push) APPEND → inboxd's connection told:", f["push_s"]),
        "       told in the answer to: " + ", ".join(f"{command or 'nothing yet'} {n}"
                                                      for command, n in sorted(f["told_in"].items())),
        row("(ack)  APPEND → acknowledgement stored:", ack),
        row("(own)  told → acknowledgement stored:", own),
        *[row(f"       of the {n} told {how}:", f[key]) for n, how, key in (
            (idling, "while idling", "own_idling_s"),
            (sum(f["told_in"].values()) - idling, "in passing", "own_in_passing_s")) if n],
        f"inboxd's own share, from its log ({f['split_mails']} mails; log times to the millisecond):",
        row("  told → daemon logs new mail:", split["push_to_new_mail"]),
        row("  new mail → item created:", split["new_mail_to_created"]),
        row("  item created → ack stored:", split["created_to_stored"]),
        row("  (after) ack stored → 'sent ack' line:", split["stored_to_sent_line"]),
        f"own share p50 {own['p50'] * 1000:.0f} ms (goal ≤ {GOAL_OWN_SHARE_SECONDS * 1000:.0f} ms) "
        f"{verdict(own['p50'], GOAL_OWN_SHARE_SECONDS)}; ack p50 {ack['p50']:.3f} s (goal ≤ {GOAL_P50_SECONDS} s) "
        f"{verdict(ack['p50'], GOAL_P50_SECONDS)}; p99 {ack['p99']:.3f} s (goal ≤ {GOAL_P99_SECONDS} s) "
        f"{verdict(ack['p99'], GOAL_P99_SECONDS)}; max {ack['max']:.3f} s (goal ≤ {GOAL_MAX_SECONDS} s) "
        f"{verdict(ack['max'], GOAL_MAX_SECONDS)}",
        f"acknowledged: {f['acknowledged']}/{f['mails']}; acknowledgements after a team mail about the same "
        f"request: {f['ack_after_team_mail']}",
        *[f"problem: {p}" for p in f["problems"]]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=100, help="requests to APPEND (default 100)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between APPENDs (default 0.5)")
    parser.add_argument("--server", choices=["dovecot", "pymap", "auto"], default="auto",
                        help="IMAP server (default: Dovecot if available)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = parser.parse_args(argv)
    figures = measure(args.mails, args.interval, args.server)
    print(json.dumps(figures, indent=2) if args.json else report(figures))
    return 0 if figures["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
