"""The benches run end to end at a small size: figures printed, results correct. No speed asserts."""

from __future__ import annotations

import json
import os
import pstats
import re
import subprocess
import sys
from collections import Counter
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from inboxd.servers import DovecotServer

REPO = Path(__file__).resolve().parent.parent
N = 20
RATE = r"\s+([0-9]+(?:\.[0-9]+)?) (?:mails|requests)/s"
ITEMS = (r"items: (\d+)/(\d+), acknowledged: (\d+) ack\(s\) for (\d+) item\(s\), captured: (\d+) mail\(s\) "
         r"\((\d+) acks, (\d+) assigned, (\d+) announcements, (\d+) reminders, (\d+) unaccounted\), INBOX: (\d+), "
         r"Processed: (\d+)")

sys.path.insert(0, str(REPO / "bench"))
from ingest import make_field_mails  # noqa: E402


def _bench(script: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Run bench/`script` with `args`; it must exit 0 (a wrong result exits 1, a missed goal does not)."""
    done = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
    return done


def _ingest(*args: str) -> subprocess.CompletedProcess[str]:
    return _bench("ingest.py", *args)


def test_ingest_bench_small_runs_both_configurations_correctly() -> None:
    """The field-like mailbox, (b) and (c) in each configuration: every mail accounted for. No speed asserts."""
    if os.environ.get("CI", "").lower() == "true" and not DovecotServer.available():
        pytest.fail("CI=true but Dovecot is not available")
    out = _ingest("--mails", str(N)).stdout
    server = "Dovecot" if DovecotServer.available() else "pymap"
    assert re.search(rf"^inboxd ingest benchmark: {N} mails, {server}[^,]*, field mailbox", out, re.M), out
    box = re.search(r"^mailbox: (\d+) senders \(at most (\d+) requests from one\)", out, re.M)
    assert box and int(box[1]) < N and 1 < int(box[2]) <= 10, out  # several requests per sender, under the caps
    if server == "Dovecot":  # as Dovecot reads its config: its own default, as in the field
        assert re.search(r"Dovecot mail_fsync: optimized$", out, re.M), out
    assert (a := re.search(rf"^\(a\) raw fetch\+parse:{RATE}", out, re.M)) and float(a[1]) > 0, out
    default, acks = out.split("\nacks only (")
    for section, goal in ((default, 60), (acks, 90)):
        for label in (r"\(b\) raw pipeline \(\+SMTP ack\):", r"\(c\) inboxd once:"):
            match = re.search(rf"^  {label}{RATE}", section, re.M)
            assert match and float(match[1]) > 0, f"no {label} line with a rate in:\n{section}"
        assert re.search(r"^  \(c\) inboxd once: .* requests/s\s+[0-9.]+ mails out/s", section, re.M), section
        ratio = re.search(rf"^  c/b:\s+([0-9.]+) %\s+goal >= {goal} %\s+(PASS|MISS)$", section, re.M)
        assert ratio and float(ratio[1]) > 0, section
        rss = re.search(r"^  peak RSS \(inboxd\):\s+([0-9.]+) MB\s+goal < 150 MB\s+(PASS|MISS)$", section, re.M)
        assert rss and float(rss[1]) > 0, section
    counts = [tuple(map(int, m.groups())) for m in re.finditer(ITEMS, out)]
    assert len(counts) == 2, out
    for items, total, acked, acked_items, captured, acks_, assigned, announced, reminders, odd, inbox, done in counts:
        assert items == total == acked == acked_items == acks_ == done == N and inbox == odd == 0, out
        assert captured == acks_ + assigned + announced + reminders, out
    assert counts[0][6] + counts[0][7] > 0, out  # the default: team mail too
    assert counts[1][4] == N, out  # acknowledgements only: exactly one mail per request


def test_ingest_bench_lab_json_with_the_old_option() -> None:
    """--lab --announce-new: the earlier mailbox, the default configuration alone, as JSON."""
    if os.environ.get("CI", "").lower() == "true" and not DovecotServer.available():
        pytest.fail("CI=true but Dovecot is not available")
    figures = json.loads(_ingest("--mails", "5", "--json", "--lab", "--announce-new").stdout)
    assert figures["correct"] is True and figures["problems"] == []
    assert figures["mails"] == 5 and figures["shape"] == "lab"
    assert figures["dovecot_fsync"] == ("never" if DovecotServer.available() else None)
    assert figures["mailbox"]["senders"] == 5 and list(figures["configs"]) == ["default"]
    c = figures["configs"]["default"]
    assert c["items"] == c["processed"] == c["captured_acks"] == 5
    assert all(c[k] > 0 for k in ("b_raw_pipeline_per_s", "c_requests_per_s", "c_mails_out_per_s", "c_over_b",
                                  "peak_rss_mb", "largest_process_rss_mb", "processes_rss_mb", "processes_rss_sum_mb",
                                  "c_cpu_seconds"))
    assert c["processes"] >= 1 and c["peak_rss_mb"] == max(c["largest_process_rss_mb"], c["processes_rss_mb"])
    # Each item's owner got `assigned`, or each member of its queue `new_request` (each their own reply address):
    # five acks, one `assigned`, and four unowned items announced to each of two members.
    assert (c["captured"], c["captured_assigned"], c["captured_announcements"]) == (5 + 1 + 4 * 2, 1, 8)


def test_ingest_bench_profiles_inboxd(tmp_path: Path) -> None:
    """--profile FILE: (c) runs under cProfile and leaves a profile that pstats reads."""
    profile = tmp_path / "once.prof"
    figures = json.loads(_ingest("--mails", "5", "--server", "pymap", "--json", "--config", "acks",
                                 "--profile", str(profile)).stdout)
    assert figures["correct"] is True and list(figures["configs"]) == ["acks"]
    assert figures["configs"]["acks"]["captured"] == 5 and figures["configs"]["acks"]["profile"] == str(profile)
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]  # (not in the stubs)
    functions = {f"{path}:{name}" for path, _line, name in stats}
    assert any("inboxd" in f and f.endswith(":ingest") for f in functions), sorted(functions)[:20]


def test_ingest_bench_breaks_memory_down_per_process() -> None:
    """--smaps: each of inboxd's processes by role, the peak of each kind, and its mappings summed by what they hold."""
    figures = json.loads(_ingest("--mails", "5", "--server", "pymap", "--json", "--config", "acks", "--smaps").stdout)
    breakdown = figures["configs"]["acks"]["breakdown"]
    roles = {name.split(" (")[0] for name in breakdown}
    assert {"intake", "delivery"} <= roles, breakdown.keys()
    intake = next(b for name, b in breakdown.items() if name.startswith("intake") and b["maps_at_peak"])
    assert intake["peak_kb"]["Rss"] >= intake["peak_kb"]["Anonymous"] > 0
    assert intake["maps_at_peak"]["[heap] (main arena: malloc of the main thread)"]["Rss"] > 0
    assert intake["maps_rss_kb"] == sum(group["Rss"] for group in intake["maps_at_peak"].values())


def test_field_mailbox_never_repeats_a_request_of_one_sender() -> None:
    """No sender sends one subject or text twice (caps.py would rightly withhold the second ack); under the caps."""
    mails = [BytesParser(policy=policy.default).parsebytes(raw) for raw in make_field_mails(400, "t")]
    senders = Counter(m["From"].addresses[0].addr_spec for m in mails)
    assert len(senders) < len(mails) / 2 and max(senders.values()) <= 10 < 20  # several each, under the cap of 20
    subjects = {(m["From"].addresses[0].addr_spec, m["Subject"]) for m in mails}
    texts = {(m["From"].addresses[0].addr_spec, body.get_content()) for m in mails
             if (body := m.get_body(("plain", "html"))) is not None}
    assert len(subjects) == len(texts) == len(mails)
    sizes = sorted(len(m.as_bytes()) for m in mails)
    assert sizes[len(sizes) // 2] < 3072 and any(s > 10240 for s in sizes)
    assert any(m.get_content_type() == "text/html" for m in mails)
    assert any(m.get_content_type() == "multipart/mixed" for m in mails)


def test_intake_cpu_bench_small(tmp_path) -> None:
    """bench/intake_cpu.py at a small size: its figures printed, and a dump of what was stored and sent."""
    done = _bench("intake_cpu.py", "--mails", "20", "--runs", "1", "--senders", "5")
    figures = re.search(r"^20 mails from 5 senders, 1 runs, medians \(ranges\): raw floor ([0-9.]+) ms/mail .*"
                        r"Pipeline.process ([0-9.]+) ms/mail", done.stdout, re.M)
    assert figures and float(figures[1]) > 0 and float(figures[2]) > 0, done.stdout
    dump = tmp_path / "dump.json"
    done = _bench("intake_cpu.py", "--mails", "5", "--dump", str(dump))
    rows = json.JSONDecoder().raw_decode(dump.read_text())[0]
    assert {row["table"] for row in rows} >= {"Item", "Message", "Event", "Outbox"}
    assert all("<ours-" in row["raw"] for row in rows if row["table"] == "Outbox")  # our Message-IDs numbered


def test_crash_trials_small() -> None:
    """A few kills over a few mails: the harness runs, and nothing is lost or doubled."""
    if os.environ.get("CI", "").lower() == "true" and not DovecotServer.available():
        pytest.fail("CI=true but Dovecot is not available")
    done = _bench("crash_trials.py", "--kills", "3", "--mails", "30", "--json", timeout=300)
    figures = json.loads(done.stdout)
    assert (figures["kills"], figures["mails"], figures["items"], figures["acknowledged"]) == (3, 30, 30, 30)
    assert figures["lost"] == figures["duplicate_items"] == figures["second_acks"] == 0
    assert figures["duplicate_acks"] <= 3 and figures["problems"] == []


def test_memory_bench_small() -> None:
    """A few 2 MB mails and a request behind them: the harness runs, every mail is an item, the request acknowledged."""
    if os.environ.get("CI", "").lower() == "true" and not DovecotServer.available():
        pytest.fail("CI=true but Dovecot is not available")
    done = _bench("memory.py", "--big", "3", "--size-mb", "2", "--json", timeout=300)
    figures = json.loads(done.stdout)
    assert figures["correct"] is True and figures["problems"] == []
    assert figures["run"]["items"] == 4 and figures["run"]["normal_acknowledged"] is True
    assert figures["baseline"]["peak_rss_mb"] > 0 and figures["run"]["peak_rss_mb"] > 0


def test_sweep_bench_small() -> None:
    done = _bench("sweep.py", "--items", "2000", "--due", "10")
    out = done.stdout
    assert re.search(r"^inboxd sweep benchmark: 2000 open items \(SQLite\), 10 falling due$", out, re.M), out
    baseline = re.search(r"^baseline, load every open item:\s+([0-9.]+) s", out, re.M)
    run = re.search(r"^run \(send 30 mail\(s\)\):\s+([0-9.]+) s\s+goal < 1 s\s+(PASS|MISS)$", out, re.M)
    idle = re.search(r"^idle sweep \(nothing due\):\s+([0-9.]+) s\s+goal < 1 s\s+(PASS|MISS)$", out, re.M)
    assert baseline and run and idle, out
    assert float(baseline[1]) > 0 and float(run[1]) > 0 and float(idle[1]) > 0, out
    assert re.search(r"^heap peak of due\(\):\s+[0-9.]+ MB at 2000 items, [0-9.]+ MB at 200 \(both with 30 due\)$",
                     out, re.M), out
    assert "WRONG" not in out


def test_hostile_bench_small() -> None:
    """Every hostile shape, shrunk a hundredfold, becomes an item with its lookups bounded."""
    done = _bench("hostile.py", "--scale", "0.01", "--repeat", "1", "--json")
    figures = json.loads(done.stdout)
    assert figures["wrong"] == [] and len(figures["shapes"]) == 9
    assert all(s["outcomes"] == ["item"] and s["seconds"] > 0 and s["lookups"] <= 5 for s in figures["shapes"])


def test_scrape_bench_small() -> None:
    done = _bench("scrape.py", "--items", "2000")
    out = done.stdout
    assert re.search(r"^inboxd scrape benchmark: 2000 items, 4000 outgoing mails \(SQLite\)$", out, re.M), out
    baseline = re.search(r"^baseline \(COUNT\(\*\) over the items\):\s+([0-9.]+) ms$", out, re.M)
    scrape = re.search(r"^/metrics scrape:\s+([0-9.]+) ms\s+goal < 100 ms\s+(PASS|MISS)$", out, re.M)
    healthz = re.search(r"^/healthz:\s+([0-9.]+) ms$", out, re.M)
    assert baseline and scrape and healthz and float(scrape[1]) > 0, out
    assert "WRONG" not in out


def test_search_bench_small() -> None:
    """bench/search.py at 2,000 items: every search finds what it asks for; no speed asserts."""
    out = _bench("search.py", "--items", "2000").stdout
    assert re.search(r"^inboxd search benchmark: 2000 items, 5000 mails \(SQLite, FTS5\)$", out, re.M), out
    timed = re.findall(r"^[a-z(][^:]*:\s+([0-9.]+) ms\s+goal < 1 s\s+(?:PASS|MISS)$", out, re.M)
    assert len(timed) == 7 and all(float(t) > 0 for t in timed), out
    assert re.search(r"^storing an incoming mail: \d+ us with the index, \d+ us without", out, re.M), out
    assert "WRONG" not in out


def test_stats_bench_small() -> None:
    """bench/stats.py at 2,000 items: the command line and figures() count every item filled; no speed asserts."""
    out = _bench("stats.py", "--items", "2000", "--runs", "1", "--json").stdout
    rows = json.loads(out[out.index("["):])
    assert [row["items"] for row in rows] == [0, 200, 1000, 2000]
    assert all(row["requests"] == row["items"] and row["stats_seconds"] > 0 and row["stats_rss_mb"] > 0
               for row in rows), rows
    assert re.search(r"^over the baseline \(no items\): [+-][0-9.]+ s, [+-][0-9.]+ MB at 2,000 items", out, re.M), out


def test_latency_bench_small() -> None:
    """bench/latency.py at a small size: every request acknowledged and paired with what inboxd was told; no timing."""
    done = _bench("latency.py", "--mails", "5", "--interval", "0.3", "--json", timeout=180)
    figures = json.loads(done.stdout)
    assert figures["correct"] is True and figures["acknowledged"] == 5 and figures["problems"] == []
    assert figures["mails_out"] >= 5 and figures["ack_after_team_mail"] == 0  # the requester first
    assert sum(figures["told_in"].values()) == 5 and figures["split_mails"] == 5  # each mail in the log, told once
    for which in ("push_s", "ack_s", "own_s"):
        assert figures[which]["p50"] <= figures[which]["max"]
    assert 0 < figures["push_s"]["p50"] < figures["ack_s"]["p50"]


def test_latency_relay_counts_arrivals_net_of_expunges() -> None:
    """The relay's reading of inboxd's connection: a mail arrives when EXISTS rises over what the EXPUNGEs left."""
    sys.path.insert(0, str(REPO / "bench"))
    from latency import ConnectionView

    view = ConnectionView()
    told = []
    for side, line in [("client", b"A1 SELECT INBOX\r\n"), ("server", b"* 0 EXISTS\r\n"),
                       ("client", b"A2 IDLE\r\n"), ("server", b"* 1 EXISTS\r\n"),  # mail 1, pushed
                       ("client", b"DONE\r\n"), ("client", b"A3 UID MOVE 1 Processed\r\n"),
                       ("server", b"* 1 EXPUNGE\r\n"), ("server", b"* 2 EXISTS\r\n"),  # mails 2 and 3, in passing
                       ("client", b"A4 IDLE\r\n"), ("server", b"* 1 EXPUNGE\r\n"), ("server", b"* 2 EXPUNGE\r\n"),
                       ("server", b"* 1 EXISTS\r\n"), ("server", b"* 1 RECENT\r\n")]:  # mail 4 after both left
        if side == "client":
            view.client_line(line)
        else:
            told += [view.command] * view.server_line(line)
    assert told == ["IDLE", "UID MOVE", "UID MOVE", "IDLE"] and view.count == 1


def test_failover_bench_small() -> None:
    """bench/failover.py, one trial of each loss and kind: the lost leases taken over, never held by two at once."""
    from postgres import server_for_tests
    server_for_tests()  # skips where PostgreSQL cannot run (CI requires it)
    done = _bench("failover.py", "--trials", "1", "--json", timeout=300)
    figures = json.loads(done.stdout)
    assert set(figures) == {"rows", "advisory"}
    for kind, ways in figures.items():
        assert set(ways) == {"kill", "freeze", "restart"}, kind
        for way, (trial,) in ways.items():
            assert trial["overlapping_leases"] == 0 and trial["failover"] < 60, (kind, way, trial)
        assert ways["freeze"][0]["gap"] > 0 and ways["kill"][0]["moved"] == 7


def test_scale_bench_small() -> None:
    """bench/scale.py on 4 mailboxes, 1 and 2 workers, a short stream: every request once, the kill taken over."""
    from postgres import server_for_tests
    server_for_tests()  # skips where PostgreSQL cannot run (CI requires it)
    done = _bench("scale.py", "--workers", "1,2", "--mailboxes", "4", "--rate", "4", "--seconds", "8", "--json",
                  timeout=600)
    one, two = json.loads(done.stdout)
    for run in (one, two):
        assert (run["lost"], run["duplicate_items"], run["unacknowledged"]) == (0, 0, 0), run
    assert one["duplicate_acks"] == 0 and two["duplicate_acks"] <= 1
    assert two["killed_mailboxes"] == 2 and two["failover_max_s"] is not None and two["recovered_max_s"] > 0


def test_statements_bench_small() -> None:
    """bench/statements.py on SQLite and PostgreSQL at a small size: each phase counted, its rows, the plans read."""
    from postgres import server_for_tests
    server_for_tests()  # skips where PostgreSQL cannot run (CI requires it)
    sqlite, postgres = json.loads(_bench("statements.py", "--requests", "40", "--batch", "20", "--json",
                                         timeout=300).stdout)
    assert (sqlite["backend"], postgres["backend"]) == ("sqlite", "postgres")
    for run in (sqlite, postgres):
        phases = run["phases"]
        new = phases["new request"]
        assert new["rows_added"]["item"] == 1 and new["by_kind"]["BEGIN"] == new["by_kind"]["COMMIT"] >= 1
        assert new["mails_queued"] >= 1 and new["rows_added"]["outbox"] == new["mails_queued"]
        assert phases["new request: delivery"]["updates_by_table"]["outbox"] == new["mails_queued"]  # each sent once
        assert phases["#take"]["updates_by_table"]["item"] == phases["#done"]["updates_by_table"]["item"] == 1
        assert "item" not in phases["follow-up"]["rows_added"] and phases["sweep, idle: a run"]["mails_queued"] == 0
        plans = [p for p in run["plans"] if "new request" in p["phases"] and p["kind"] == "SELECT"]
        assert plans and all(p["plan"] for p in plans)
        assert run["bytes_per_request_total"] > 0 and run["rows_per_request"]["item"] == 1
    assert phases["sweep: a mail it queues"]["rows_added"]["notice"] == 1  # each job mail once: its notice row
    assert phases["sweep, idle: a run"]["rows_added"] == {"jobrun": 1}  # on PostgreSQL a worker claims each sweep
    assert "jobrun" not in sqlite["phases"]["sweep, idle: a run"]["rows_added"]


@pytest.mark.server
def test_claims_bench_small() -> None:
    """bench/claims.py at 200 due: each order claims the mail it should (asserted inside); no speed asserts."""
    out = _bench("claims.py", "--due", "200", "--claims", "10").stdout
    assert re.search(r"^  teams taking turns: +[0-9.]+ / [0-9.]+ / [0-9.]+ ms a claim; the other team's first mail "
                     r"is claim 2$", out, re.M), out
