"""The report page (`inboxd report --html`, `/report`) and the digest's HTML part, drawn by hand and shown in Chromium.

Chromium (Debian's `chromium`; `.ci/run` installs it) loads each page headless from a file: no console
message at all (the pages have no scripts, so any message is a fault), the charts in the DOM it built,
the figures equal to `stats --json` for the same database and period, a `<script>` subject shown as
text. Screenshots are kept under test-artifacts/ (git-ignored). The drawing and the layout are also
tested on hand-made figures, without a database or a browser.
"""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import sqlite3
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from inboxd import charts, http, report
from inboxd.backup import sqlite_path
from inboxd.cli import cli
from inboxd.clock import FixedClock
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.health import Health
from inboxd.models import Item, open_database
from inboxd.outbox import FakeTransport
from inboxd.servers import free_port
from inboxd.source import FakeSource
from markupsafe import escape

from helpers import REPO, make_mail, write_config
from month_data import END, START

BERLIN = ZoneInfo("Europe/Berlin")
HOSTILE = "<script>alert('x')</script> printer on fire"
PERIOD = ["--since", "2026-11-02", "--until", "2026-11-29", "--at", END.isoformat()]  # the month, as test_stats
ARTIFACTS = REPO / "test-artifacts"


# --- the drawing, on hand-made values ---------------------------------------------------------------------------

def test_svg_bars_carry_their_numbers_and_escape_their_labels():
    svg = charts.svg_bars("requests", "Requests <per> week", [("W45", 12), ("<b>", 3), ("W47", None)])
    assert svg.startswith('<svg class="chart" id="chart-requests" viewBox="0 0 480 250" role="img"')
    assert "<title id=\"chart-requests-title\">Requests &lt;per&gt; week</title>" in svg
    assert "W45: 12; &lt;b&gt;: 3; W47: –" in svg  # the numbers as text, for screen readers
    assert svg.count("<rect") == 3 and "<b>" not in svg
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]
    assert heights[0] == pytest.approx(4 * heights[1]) and heights[2] == 0


def test_svg_hbars_lay_long_labels_beside_their_bars():
    svg = charts.svg_hbars("ages", "Open <now>", [("≤ 3 business days", 10), ("4 weeks or more", 5)])
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([\d.]+)"', svg)]
    assert widths[0] == pytest.approx(2 * widths[1]) and "≤ 3 business days: 10; 4 weeks or more: 5" in svg
    assert "Open &lt;now&gt;" in svg and "<now>" not in svg


def test_svg_lines_break_where_a_week_has_no_value():
    svg = charts.svg_lines("rates", "On time", ["W1", "W2", "W3", "W4", "W5"],
                           [("Done on time", charts.GREEN, [50.0, 100.0, None, 80.0, 90.0])])
    assert svg.count("<polyline") == 2  # W1-W2 and W4-W5: no line drawn through the week without a value
    assert svg.count("<circle") == 4 and "Done on time: W1: 50 %; W2: 100 %; W3: –; W4: 80 %; W5: 90 %" in svg


def test_table_bars_for_mail_are_cells_as_wide_as_their_share():
    html = charts.table_bars("Done on time", [("W45", 50.0), ("W46", None), ("<i>", 100)], " %", top=100)
    assert 'width="50%"' in html and 'width="100%"><tr><td bgcolor' in html
    assert html.count("bgcolor=") == 2  # no bar for a week without a value
    assert "&lt;i&gt;" in html and "<i>" not in html and "50 %" in html and "–" in html


def figures_of(**values) -> dict:
    """A `stats.figures` result with every key, zeros unless given."""
    found = dict.fromkeys(report.LABELS, 0) | {
        "since": datetime(2026, 10, 26, tzinfo=BERLIN), "until": datetime(2026, 11, 30, tzinfo=BERLIN),
        "queue": None, "owner": None,
        "first_response_histogram": [{"label": "≤ 15 min", "upto_minutes": 15, "count": 4},
                                     {"label": "> 15 min", "upto_minutes": None, "count": 1}],
        "satisfaction": {"1": 0, "2": 1, "3": 0, "4": 2, "5": 5},
        "open_by_age": [{"label": "< 1 day", "count": 2}, {"label": "≥ 1 day", "count": 1}]}
    return found | values


def test_the_page_escapes_the_database_and_marks_every_figure(config):
    line = {"ref": "IT-7", "subject": HOSTILE, "due_at": START, "owner_name": "Ana <ana>", "status": "open"}
    data = {"figures": figures_of(requests=12, done_on_time_pct=87.5, late_without_notice=2,
                                  first_response_median_minutes=95, satisfaction_average=None),
            "weeks": [{"key": "2026-W45", **figures_of(requests=7)}, {"key": "2026-W46", **figures_of(requests=5)}],
            "open": {"late_count": 1, "late": [line], "at_risk_count": 0, "at_risk": []}}
    page = report.page(config, data, START)  # the config for its team and timezone; no database
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; printer on fire" in page and "<script" not in page
    assert "Ana &lt;ana&gt;" in page
    assert re.search(r'class="figure alert"><span class="value" data-figure="late_without_notice" '
                     r'data-value="2">2</span>', page)
    assert 'data-figure="done_on_time_pct" data-value="87.5">87.5 %<' in page
    assert 'data-figure="first_response_median_minutes" data-value="95">1 h 35 min<' in page
    assert 'data-figure="satisfaction_average" data-value="">–<' in page
    assert page.count("<svg") == 5 and "W45: 7; W46: 5" in page
    # self-contained: nothing is fetched, from anywhere
    assert not re.search(r"\b(src|href)=|@import|url\(", page)
    assert f'content="{escape(report.POLICY)}"' in page and 'name="viewport"' in page


def test_the_page_stays_bounded_with_huge_subjects_and_many_late_items(config):
    line = {"ref": "IT-7", "subject": "x" * 100_000, "due_at": START, "owner_name": "Ana", "status": "open"}
    data = {"figures": figures_of(), "weeks": [],
            "open": {"late_count": 5000, "late": [line] * 25, "at_risk_count": 0, "at_risk": []}}
    page = report.page(config, data, START)
    assert len(page) < 50_000 and "… and 4975 more" in page
    assert "x" * 200 not in page and "x" * 150 in page  # shortened as the mail's subjects are


@pytest.mark.parametrize("address, mine", [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True),
                                           ("::ffff:127.0.0.1", True), ("192.0.2.7", False),
                                           ("::ffff:192.0.2.7", False), ("2001:db8::1", False), ("", False)])
def test_only_this_machine_gets_the_report(address, mine):
    assert http._loopback(address) is mine


def test_report_refuses_a_client_from_elsewhere_and_writes_nothing(tmp_path):
    config = load_config(write_config(tmp_path))
    app = http._app({config.team.key: Health(tmp_path / "health.json")}, [config])
    answer: list[str] = []
    body = b"".join(app({"PATH_INFO": "/report", "REMOTE_ADDR": "192.0.2.7"}, lambda status, _: answer.append(status)))
    assert answer == ["403 Forbidden"] and b"this machine only" in body and b"<" not in body


# --- the data: the simulated month (tests/month_data.py), and one subject that is HTML -------------------------------

@pytest.fixture(scope="module")
def team(month, tmp_path_factory) -> Path:
    """A copy of the month's database with one more request, older than the rest and late: a subject in HTML."""
    directory = tmp_path_factory.mktemp("team")
    path = write_config(directory, extra="\n[service]\ndigest = false\n")  # the month's config, this database
    with closing(sqlite3.connect(sqlite_path(month.config.database_url))) as source, \
            closing(sqlite3.connect(directory / "inboxd.db")) as copy:
        source.backup(copy)
    daemon = Daemon(load_config(path), clock=FixedClock(START - timedelta(days=1)), source=FakeSource(),
                    transport=FakeTransport())
    assert daemon.pipeline.process(make_mail("mallory@example.org", HOSTILE)).kind == "item"
    return path


# --- Chromium ------------------------------------------------------------------------------------------------------

def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI requires Chromium (apt-get install -y chromium; bash .ci/run installs it)")
    pytest.skip("chromium not installed (bash .ci/run installs it)")


def chromium(page: Path, *, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """Load a page from its file headless: the DOM Chromium built (or "" for a screenshot), and its console lines."""
    args = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--enable-logging=stderr", "--v=0", "--hide-scrollbars", f"--user-data-dir={page.parent / 'chromium'}"]
    args += [f"--screenshot={screenshot}", "--window-size=1100,2400"] if screenshot else ["--dump-dom"]
    done = subprocess.run([*args, page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


class Figures(HTMLParser):
    """Every `data-figure` in a DOM: key -> the values it carries (the headline and the table both carry some)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, set[str]] = {}
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        named = dict(attrs)
        self.scripts += tag == "script"
        if "data-figure" in named:
            self.found.setdefault(named["data-figure"], set()).add(named["data-value"])


def run(config: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_report_renders_in_chromium_with_the_numbers_of_stats_json(team, tmp_path):
    page = tmp_path / "report.html"
    assert run(team, "report", "--html", str(page), *PERIOD) == f"wrote {page}\n"
    stats = json.loads(run(team, "stats", "--json", *PERIOD))
    dom, console = chromium(page)
    assert console == []
    assert len(re.findall(r"<svg\b", dom)) == 5 and len(re.findall(r"<rect\b", dom)) > 20
    shown = Figures()
    shown.feed(dom)
    assert shown.scripts == 0 and "&lt;script&gt;alert('x')&lt;/script&gt; printer on fire" in dom
    assert set(shown.found) == set(report.LABELS)
    for key, values in shown.found.items():
        expected = stats[key]
        assert values == {"" if expected is None else str(expected)}, key
    assert stats["requests"] == 1000 and stats["done"] and stats["dates_moved"] and stats["rated"]  # it means something
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    _, console = chromium(page, screenshot=shot)
    assert console == [] and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"screenshot of the report: {shot}")


def test_report_by_default_covers_twelve_weeks_from_a_monday(team, tmp_path):
    page = tmp_path / "report.html"
    run(team, "report", "--html", str(page), "--at", END.isoformat())
    html = page.read_text()
    assert "<p>Mon 14 Sep 2026 to Mon 30 Nov 2026; made Mon 30 Nov 00:00.</p>" in html
    assert '<desc id="chart-requests-desc">W38: 0; W39: 0; W40: 0; W41: 0; W42: 0; W43: 0; W44: 1; W45: 359; ' \
           'W46: 332; W47: 309; W48: 0; W49: 0</desc>' in html  # W44: the HTML subject, a day before the month
    assert 'data-figure="requests" data-value="1001"' in html


def test_report_is_read_only_and_refuses_a_missing_database(tmp_path):
    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(config), "report", "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "read-only commands never do" in result.output
    assert not (tmp_path / "r.html").exists() and not list(tmp_path.glob("*.db"))


def write_from_another_thread() -> str:
    """What an insert says from a thread using `http.read_only`, as the http thread does."""
    def attempt() -> str:
        with http.read_only():
            try:
                Item.create(subject="x", requester="r@example.org", queue="default", created_at=START)
            except Exception as exc:
                return str(exc)
        return "written"
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(attempt).result()


def test_the_http_threads_connection_cannot_write(tmp_path):
    config = load_config(write_config(tmp_path))
    open_database(config.database_url)
    assert write_from_another_thread() == "attempt to write a readonly database"
    Item.create(subject="y", requester="r@example.org", queue="default", created_at=START)  # this thread's still can
    assert [i.subject for i in Item.select()] == ["y"]


@pytest.mark.server  # it listens on a port
def test_report_over_http_on_loopback(team):
    free_listen = ("127.0.0.1", free_port())
    config = load_config(team)
    open_database(config.database_url, migrate=False)
    with http.serving(free_listen, {config.team.key: Health(team.parent / "health.json")}, [config],
                      FixedClock(END)):
        with urllib.request.urlopen(f"http://127.0.0.1:{free_listen[1]}/report?queue=facilities") as answer:
            body = answer.read().decode()
            assert answer.status == 200 and answer.headers["Cache-Control"] == "no-store"
            assert answer.headers["Content-Security-Policy"].startswith(report.POLICY)
    assert body.count("<svg") == 5 and ", queue facilities;" in body
    for odd in ("owner=%00", "queue=a%0Ab", f"owner={'x' * 400}"):  # PostgreSQL refuses a NUL: say so, not 503
        with pytest.raises(urllib.error.HTTPError) as refused:
            with http.serving(free_listen, {config.team.key: Health(team.parent / "health.json")}, [config], FixedClock(END)):
                urllib.request.urlopen(f"http://127.0.0.1:{free_listen[1]}/report?{odd}")
        assert refused.value.code == 400 and b"printable text" in refused.value.read()


# --- the digest's HTML part -----------------------------------------------------------------------------------------

# The text parts as inboxd sent them before the HTML part existed (main at b7e219d), byte for byte.
TEXT_BEFORE = (
    "Hello,\r\n\r\nhere is {whose} week, Monday 16 November to Monday 23 November.\r\n\r\n"
    "  New requests:  3\r\n  Done:          1, 1 of them on time (100 %)\r\n"
    "  Satisfaction:  5.0 of 5 from 1 rating(s)\r\n  Open now:      2\r\n  Late:          2\r\n"
    "  At risk:       0 (due by the end of the next working day, not confirmed with #ontrack)\r\n\r\n"
    "Late, past the date we promised:\r\n"
    "  [IT-2] Screen <script>alert(1)</script> again, due Thursday 19 November 2026, 10:00, Ana\r\n"
    "  [IT-3] Printer jam on floor 2, due Thursday 19 November 2026, 10:00, Ana\r\n\r\nIT Help\r\n")


def digest_week(tmp_path: Path, templates: Path | None = None) -> Daemon:
    """A week of three requests (one done and rated, two late), swept at the digest's moment."""
    from conversation_helpers import Conversation
    config = load_config(write_config(tmp_path, templates=templates))
    daemon = Daemon(config, clock=FixedClock(datetime(2026, 11, 16, 10, 0, tzinfo=BERLIN)), source=FakeSource(),
                    transport=FakeTransport())
    done = Conversation(daemon, sender="a@example.org")
    done.owner_says("#take")
    done.owner_says("#done swapped the cable")
    done.requester_says("5")
    Conversation(daemon, subject="Screen <script>alert(1)</script> again", sender="b@example.org").owner_says("#take")
    Conversation(daemon, subject="Printer jam on floor 2", sender="c@example.org")
    daemon.clock.moment = datetime(2026, 11, 23, 8, 5, tzinfo=BERLIN)
    daemon.sweep()
    daemon.sender.drain()
    return daemon


def digests(daemon: Daemon) -> dict[str, email.message.Message]:
    return {to[0]: email.message_from_bytes(raw) for _, to, raw in daemon.sender.transport.sent
            if b"Weekly digest" in raw}


@pytest.mark.parametrize("host, named_here", [("evil.example:9425", False), ("evil.example", False),
                                              ("127.0.0.1:9425", True), ("localhost:9425", True),
                                              ("[::1]:9425", True), ("LOCALHOST", True), (None, True)])
def test_report_answers_only_a_host_named_as_this_machine_against_dns_rebinding(tmp_path, host, named_here):
    """A web page whose name its DNS points at 127.0.0.1 reaches the port from the browser: its Host gives it away."""
    config = load_config(write_config(tmp_path))
    app = http._app({config.team.key: Health(tmp_path / "health.json")}, [config])
    answer: list[str] = []
    environ = {"PATH_INFO": "/report", "REMOTE_ADDR": "127.0.0.1"} | ({"HTTP_HOST": host} if host else {})
    body = b"".join(app(environ, lambda status, _: answer.append(status)))
    assert (answer != ["403 Forbidden"]) is named_here  # no database here: 503 past the guard
    assert named_here or b"Host" in body


def part(mail: email.message.Message, kind: str) -> bytes:
    return next(p for p in mail.walk() if p.get_content_type() == kind).get_payload(decode=True)


@pytest.mark.slow
def test_the_digest_has_an_html_part_that_renders_and_the_same_text(tmp_path):
    sent = digests(digest_week(tmp_path))
    assert set(sent) == {"lead@example.org", "ana@example.org"}
    for to, whose in (("lead@example.org", "IT Help's"), ("ana@example.org", "your")):
        mail = sent[to]
        assert mail.get_content_type() == "multipart/alternative"
        assert part(mail, "text/plain").decode() == TEXT_BEFORE.format(whose=whose)
    page = tmp_path / "digest.html"
    page.write_bytes(part(sent["lead@example.org"], "text/html"))
    dom, console = chromium(page)
    assert console == []
    assert "Screen &lt;script&gt;alert(1)&lt;/script&gt; again" in dom and "<script" not in dom
    assert "<svg" not in dom and dom.count('bgcolor="#3465a4"') >= 5  # bars as coloured cells, as Outlook shows
    for title in ("Requests per week", "Done on time, % by week", "Told before a date moved, % by week",
                  "First response this week", "Satisfaction this week", "Open now, by age"):
        assert title in dom
    ARTIFACTS.mkdir(exist_ok=True)
    chromium(page, screenshot=ARTIFACTS / "digest.png")
    print(f"screenshot of the digest: {ARTIFACTS / 'digest.png'}")


# --- PostgreSQL: the http thread's own read-only connection -------------------------------------------------------

def test_report_over_http_on_postgres_from_a_connection_that_cannot_write(tmp_path, postgres):
    url = postgres.create_database("inboxd_report")
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{url}"'))
    config = load_config(path)
    daemon = Daemon(config, clock=FixedClock(START), source=FakeSource(), transport=FakeTransport())
    daemon.source.add([make_mail("rosa@example.org", HOSTILE), make_mail("ken@example.org", "VPN is down")])
    daemon.ingest(daemon.source.open())
    listen = ("127.0.0.1", free_port())
    with http.serving(listen, {config.team.key: Health(tmp_path / "health.json")}, [config], FixedClock(START + timedelta(days=5))):
        with urllib.request.urlopen(f"http://127.0.0.1:{listen[1]}/report") as answer:
            body = answer.read().decode()
    assert 'data-figure="requests" data-value="2"' in body and "<h2>Late now (2)</h2>" in body
    assert "&lt;script&gt;alert(" in body
    assert "read-only transaction" in write_from_another_thread()
    Item.create(subject="y", requester="r@example.org", queue="default", created_at=START)  # this thread's still can
    assert Item.select().count() == 3


def test_an_admins_old_templates_without_digest_html_send_the_text_digest_once(tmp_path):
    old = tmp_path / "templates"
    shutil.copytree(REPO / "templates", old)
    (old / "digest.html").unlink()
    (tmp_path / "week").mkdir()
    daemon = digest_week(tmp_path / "week", templates=old)
    sent = digests(daemon)
    assert set(sent) == {"lead@example.org", "ana@example.org"}
    assert all(mail.get_content_type() == "text/plain" for mail in sent.values())
    assert sent["lead@example.org"].get_payload(decode=True).decode() == TEXT_BEFORE.format(whose="IT Help's")
    daemon.clock.moment += timedelta(minutes=1)
    daemon.sweep()  # a week's digest goes once per audience
    daemon.sender.drain()
    assert len(digests(daemon)) == 2 and sum(b"Weekly digest" in raw for _, _, raw in daemon.sender.transport.sent) == 2
