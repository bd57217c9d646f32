"""Latency benchmark: APPEND → acknowledgement of a running `inboxd run`, next to the server's own push.

Starts a private IMAP server (Dovecot where available, else pymap), an SMTP capture in its own
process (each mail filed under a name that starts with the nanosecond it was stored), and
`inboxd run` with the shipped defaults (announcements on). Then it APPENDs N requests at a set
interval and measures, in the same run:

  push: APPEND → the untagged EXISTS on a second connection idling on a folder of its own, where
        the same request is APPENDed right after (the server's own share: what no client can beat);
  ack:  APPEND → the requester's acknowledgement stored by the capture;

and prints p50/p90/p99/max of both, inboxd's own share (ack p50 minus push p50), and how many
acknowledgements left after a team mail about the same request. Exits 0 even when a goal is
missed (it is a benchmark), non-zero when a request was not acknowledged.

    python bench/latency.py [--mails N] [--interval S] [--server dovecot|pymap|auto] [--json]
"""

from __future__ import annotations

import argparse
import email
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from ingest import _env, _inboxd, pick_server, server_label

from inboxd.localconfig import write_local_config
from inboxd.servers import ImapServer, SmtpProcess, append_messages

GOAL_P50_SECONDS = 0.65  # issue 15, with the server's push at about 0.5 s
GOAL_OWN_SHARE_SECONDS = 0.150
GOAL_P99_SECONDS = 2.0
PUSH_FOLDER = "Push"  # where the same request is APPENDed too, for the server's own push


def request(number: int) -> bytes:
    """One small request from its own sender."""
    return (f"From: Requester {number} <requester{number}@example.org>\r\nTo: help@example.org\r\n"
            f"Subject: Latency probe {number}\r\nMessage-ID: <latency-{number}@example.org>\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nPlease help with probe {number}.\r\n").encode()


class PushWatch:
    """A connection idling on a folder of its own: when the server told it of each new mail there.

    Not on the INBOX: there inboxd moves mail out as it comes, and an expunge and an arrival told
    together would pair the wrong EXISTS with an APPEND.
    """

    def __init__(self, server: ImapServer, folder: str = PUSH_FOLDER) -> None:
        self.client = server.connect()
        if not self.client.folder_exists(folder):
            self.client.create_folder(folder)
        self.client.select_folder(folder)
        self.seen: list[float] = []  # when the server told of the 1st, 2nd, … mail in the folder
        self._stop = threading.Event()
        self.client.idle()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for response in self.client.idle_check(timeout=0.2):
                if isinstance(response, tuple) and response[1:2] == (b"EXISTS",):
                    now = time.time()  # "* 3 EXISTS" may tell of two mails at once: each is told now
                    self.seen.extend([now] * (int(response[0]) - len(self.seen)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self.client.idle_done()
            self.client.logout()
        except Exception:  # the bench is over; a server gone first changes no figure
            pass


def stored_mails(directory: Path) -> list[tuple[float, email.message.Message]]:
    """(when the capture stored it, the mail) for each filed mail."""
    found = []
    for path in directory.glob("*.eml"):
        found.append((int(path.name.split(".")[0]) / 1e9, email.message_from_bytes(path.read_bytes())))
    return sorted(found, key=lambda pair: pair[0])


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
        config = write_local_config(work / "site", server.port, smtp.port, server.user, server.password,
                                    retry_seconds=1)
        log = (work / "inboxd.log").open("w")
        daemon = subprocess.Popen(_inboxd(config, "run"), stdout=log, stderr=subprocess.STDOUT, env=_env(),
                                  stdin=subprocess.DEVNULL)
        stack.callback(daemon.wait, 30)
        stack.callback(daemon.terminate)
        deadline = time.monotonic() + 30
        while "watching with" not in (work / "inboxd.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        watch = PushWatch(server)
        stack.callback(watch.close)
        appended: dict[str, float] = {}
        pushed: list[float] = []
        for number in range(count):
            appended[f"<latency-{number}@example.org>"] = time.time()
            append_messages(server, [request(number)])
            pushed.append(time.time())
            append_messages(server, [request(number)], folder=PUSH_FOLDER)
            time.sleep(interval)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            acks = [m for _, m in stored_mails(captured) if (m["To"] or "").startswith("requester")]
            if len(acks) >= count:
                break
            time.sleep(0.05)
        mails = stored_mails(captured)
        ack_at: dict[str, float] = {}
        first_team_mail: dict[str, float] = {}
        for stored, mail in mails:
            if (mail["To"] or "").startswith("requester"):
                ack_at.setdefault(str(mail["In-Reply-To"]), stored)
            elif mail["X-Inboxd-Ref"]:
                first_team_mail.setdefault(str(mail["X-Inboxd-Ref"]), stored)
        refs = {str(m["In-Reply-To"]): str(m["X-Inboxd-Ref"]) for _, m in mails
                if (m["To"] or "").startswith("requester")}
        ack_latency = [ack_at[mid] - sent for mid, sent in appended.items() if mid in ack_at]
        pushes = list(zip(pushed, watch.seen, strict=False))
        push_latency = [seen - sent for sent, seen in pushes]
        figures["acknowledged"] = len(ack_latency)
        figures["mails_out"] = len(mails)
        figures["ack_after_team_mail"] = sum(1 for mid, ref in refs.items()
                                            if ref in first_team_mail and first_team_mail[ref] < ack_at[mid])
        figures["ack_s"] = percentiles(ack_latency)
        figures["push_s"] = percentiles(push_latency)
        figures["own_share_p50_s"] = figures["ack_s"]["p50"] - figures["push_s"]["p50"]
        if len(ack_latency) < count:
            missing = sorted(set(appended) - set(ack_at))
            figures["problems"].append(f"{count - len(ack_latency)} request(s) not acknowledged within 30 s: "
                                       f"{', '.join(missing[:5])}")
            figures["log_tail"] = (work / "inboxd.log").read_text().splitlines()[-15:]
        if len(push_latency) < count:
            figures["problems"].append(f"the idling connection saw {len(push_latency)} of {count} mails arrive")
    figures["correct"] = not figures["problems"]
    return figures


def report(f: dict) -> str:
    def row(name: str, p: dict[str, float]) -> str:
        return (f"{name:<38} p50 {p['p50']:.3f} s   p90 {p['p90']:.3f} s   p99 {p['p99']:.3f} s   "
                f"max {p['max']:.3f} s")
    verdict = "PASS" if f["ack_s"]["p50"] <= GOAL_P50_SECONDS else "MISS"
    share = "PASS" if f["own_share_p50_s"] <= GOAL_OWN_SHARE_SECONDS else "MISS"
    tail = "PASS" if f["ack_s"]["p99"] <= GOAL_P99_SECONDS else "MISS"
    return "\n".join([
        f"inboxd latency benchmark: {f['mails']} requests every {f['interval_s']} s, {f['imap_server']}, "
        f"shipped defaults (announcements on), {f['mails_out']} mails out",
        row("(push) APPEND → EXISTS on an idler:", f["push_s"]),
        row("(ack)  APPEND → acknowledgement stored:", f["ack_s"]),
        f"ack p50 {f['ack_s']['p50']:.3f} s (goal ≤ {GOAL_P50_SECONDS} s) {verdict}; inboxd's own share "
        f"{f['own_share_p50_s'] * 1000:.0f} ms (goal ≤ {GOAL_OWN_SHARE_SECONDS * 1000:.0f} ms) {share}; "
        f"ack p99 {f['ack_s']['p99']:.3f} s (goal ≤ {GOAL_P99_SECONDS} s) {tail}",
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
