"""First contact (issue 14, item 1): a mailbox already holding mail is not answered by surprise; `inboxd adopt`.

On Dovecot with `inboxd` run as a process, as an admin would; the decisions themselves without servers below.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import make_mail, write_config

from inboxd.cli_adopt import Created
from inboxd.adopt import ALL, NOW, Adoption, Found, adoption, describe, first_contact_message, left_alone, parse_choice
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.errors import ConfigError, InboxdError
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource, ImapSource

INBOXD = [sys.executable, "-m", "inboxd.cli"]
NOV_2, NOV_10, NOV_20 = (datetime(2026, 11, day, 9, 0, tzinfo=UTC) for day in (2, 10, 20))
OLD = {"old1@example.org": NOV_2, "old2@example.org": NOV_10, "old3@example.org": NOV_20}


def first_contact_config(tmp_path: Path, mailbox, smtp, flag_mode: bool = False) -> Path:
    """A config as an admin writes it: no `first_contact` line, so inboxd stops and asks."""
    config = write_config(tmp_path, imap_port=mailbox.port, smtp_port=smtp.port, imap_user=mailbox.user,
                          imap_password=mailbox.password)
    text = config.read_text().replace('first_contact = "all"', "")
    config.write_text(text.replace('done_folder = "Processed"\n', "") if flag_mode else text)
    return config


def put(mailbox, sender: str, at: datetime, flags: tuple[bytes, ...] = (b"\\Seen", b"\\Answered")) -> None:
    """A mail that arrived `at` (its INTERNALDATE), already read and answered by a person unless told otherwise."""
    with mailbox.connect() as client:
        client.append("INBOX", make_mail(sender, f"Old request from {sender}"), flags=flags, msg_time=at)


def backlog(mailbox) -> None:
    for sender, at in OLD.items():
        put(mailbox, sender, at)


def inboxd(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*INBOXD, "--config", str(config), *args], capture_output=True, text=True, timeout=120)


def inbox(mailbox) -> dict[str, tuple[bytes, ...]]:
    """Sender -> flags of each mail in INBOX (but \\Recent, which only says which session saw it first)."""
    with mailbox.connect() as client:
        client.select_folder("INBOX", readonly=True)
        found = client.fetch(client.search("ALL"), [b"FLAGS", b"BODY.PEEK[HEADER.FIELDS (FROM)]"])
    return {data[b"BODY[HEADER.FIELDS (FROM)]"].decode().split(":", 1)[1].strip():
            tuple(sorted(set(data[b"FLAGS"]) - {b"\\Recent"})) for data in found.values()}


def query(config: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(config.parent / "inboxd.db") as db:
        return db.execute(sql).fetchall()


def requesters(smtp) -> list[str]:
    """Who got an acknowledgement."""
    return sorted(m.rcpt_tos[0] for m in smtp.messages if b"We have your request" in m.data)


# --- on Dovecot ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["once", "run"])
def test_first_contact_sends_nothing_and_explains_the_choices(tmp_path, mailbox, smtp_capture, command):
    config = first_contact_config(tmp_path, mailbox, smtp_capture)
    backlog(mailbox)
    before = inbox(mailbox)
    result = inboxd(config, command)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    said = result.stderr
    assert "already holds 3 mail(s)" in said and "Mon 02 Nov 2026 10:00" in said and "Fri 20 Nov 2026 10:00" in said
    for choice in ("now", "2026-11-13", "all"):
        assert f"inboxd --config {config} adopt {choice}\n" in said
    assert "since that day (1 of 3)" in said and "--no-ack" in said
    assert smtp_capture.messages == [] and inbox(mailbox) == before
    assert query(config, "select count(*) from item") == [(0,)]
    assert query(config, "select count(*) from mailboxstate") == [(0,)]


def test_adopt_now_leaves_the_old_mail_and_answers_the_next(tmp_path, mailbox, smtp_capture):
    config = first_contact_config(tmp_path, mailbox, smtp_capture)
    backlog(mailbox)
    before = inbox(mailbox)
    adopted = inboxd(config, "adopt", "now")
    assert adopted.returncode == 0 and "3 mail(s) there are left alone" in adopted.stdout, adopted.stderr
    put(mailbox, "new@example.org", NOV_2, flags=())  # an old date, but it arrived after adoption: it is new
    assert inboxd(config, "once").returncode == 0
    assert requesters(smtp_capture) == ["new@example.org"]
    assert query(config, "select requester from item") == [("new@example.org",)]
    assert inbox(mailbox) == before  # the old mail untouched: not moved, no flag added
    assert inboxd(config, "adopt", "all").returncode == 1  # adopt is for a first contact only


def test_adopt_since_a_day_tracks_that_mail_and_leaves_older_mail_even_with_a_higher_uid(
        tmp_path, mailbox, smtp_capture):
    config = first_contact_config(tmp_path, mailbox, smtp_capture)
    put(mailbox, "old1@example.org", NOV_2)
    put(mailbox, "recent@example.org", NOV_20)
    put(mailbox, "old2@example.org", NOV_10)  # copied in late from an archive: highest UID, old date
    adopted = inboxd(config, "adopt", "2026-11-15")
    assert adopted.returncode == 0, adopted.stderr
    assert "1 of 3 mail(s) there since Sun 15 Nov 2026 become items" in adopted.stdout
    assert "2 older mail(s) are left alone" in adopted.stdout and "1 new item(s): IT-1" in adopted.stdout
    assert requesters(smtp_capture) == ["recent@example.org"]
    assert set(inbox(mailbox)) == {"old1@example.org", "old2@example.org"}  # the tracked one went to Processed
    assert inboxd(config, "once").returncode == 0
    assert query(config, "select requester from item") == [("recent@example.org",)]


def test_adopt_all_acknowledges_every_mail_and_its_dry_run_said_so_first(tmp_path, mailbox, smtp_capture):
    config = first_contact_config(tmp_path, mailbox, smtp_capture)
    backlog(mailbox)
    before = inbox(mailbox)
    preview = inboxd(config, "adopt", "all", "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert all(f"would send ack to {sender}" in preview.stdout for sender in OLD)
    assert "as `inboxd adopt` would: adopted" in preview.stdout and "would create IT-3" in preview.stdout
    assert inbox(mailbox) == before and smtp_capture.messages == []
    assert not (config.parent / "inboxd.db").exists()  # no database yet, and the dry run made none
    adopted = inboxd(config, "adopt", "all")
    assert adopted.returncode == 0, adopted.stderr
    assert "3 of 3 mail(s) there become items, acknowledged" in adopted.stdout
    assert requesters(smtp_capture) == sorted(OLD)
    assert query(config, "select count(*) from item where acknowledged_at is not null") == [(3,)]
    assert inbox(mailbox) == {}


def test_adopt_all_without_acknowledgement_tracks_in_silence(tmp_path, mailbox, smtp_capture):
    config = first_contact_config(tmp_path, mailbox, smtp_capture)
    backlog(mailbox)
    adopted = inboxd(config, "adopt", "all", "--no-ack")
    assert adopted.returncode == 0, adopted.stderr
    assert "tracked without acknowledgement: no mail is sent for them" in adopted.stdout
    assert "3 mail(s) of the backlog tracked without acknowledgement" in adopted.stderr  # the log's summary
    assert smtp_capture.messages == []  # neither the requesters nor the team
    assert sorted(query(config, "select requester from item where acknowledged_at is null")) == [
        (sender,) for sender in sorted(OLD)]
    history = query(config, "select detail from event where kind = 'adopted'")
    assert len(history) == 3 and all("adopted without acknowledgement" in d for (d,) in history)
    assert "ack to old1@example.org" in " ".join(d for (d,) in history)
    put(mailbox, "new@example.org", datetime.now(UTC), flags=())
    assert inboxd(config, "once").returncode == 0
    assert requesters(smtp_capture) == ["new@example.org"]  # mail after adoption is answered as usual


def test_an_empty_mailbox_just_starts(tmp_path, mailbox, smtp_capture):
    config = first_contact_config(tmp_path, mailbox, smtp_capture)
    started = inboxd(config, "once")
    assert started.returncode == 0, started.stderr
    put(mailbox, "new@example.org", NOV_20, flags=())
    assert inboxd(config, "once").returncode == 0 and requesters(smtp_capture) == ["new@example.org"]


def test_mail_inboxd_marked_done_is_not_a_backlog(tmp_path, mailbox, smtp_capture):
    """Flag mode, the database lost: what inboxd had flagged done is not read again, nor counted."""
    config = first_contact_config(tmp_path, mailbox, smtp_capture, flag_mode=True)
    for sender in OLD:
        put(mailbox, sender, NOV_10, flags=(b"\\Seen", b"$InboxdDone"))
    assert inboxd(config, "once").returncode == 0 and smtp_capture.messages == []
    put(mailbox, "new@example.org", NOV_20, flags=())
    assert inboxd(config, "once").returncode == 0 and requesters(smtp_capture) == ["new@example.org"]


def test_the_arrivals_of_a_backlog_cost_a_moment_per_mail_not_imapclients_answer(
        tmp_path, mailbox, smtp_capture, monkeypatch):
    """Issue 15: the survey at first contact held imapclient's answer for every mail (~1 kB each: 20 MB at 20,000)."""
    monkeypatch.setattr("inboxd.source.UIDS_PER_COMMAND", 100)  # a backlog of ten commands
    berlin = timezone(timedelta(hours=1))
    with mailbox.connect() as client:
        client.multiappend("INBOX", [{"msg": make_mail(f"user{n}@example.org", f"Request {n}"),
                                      "date": (NOV_2 + timedelta(minutes=n)).astimezone(berlin)} for n in range(1000)])
    source = ImapSource(load_config(first_contact_config(tmp_path, mailbox, smtp_capture)).mailbox)
    source.open()
    try:
        uids = source.new_uids(0)
        tracemalloc.start()
        try:
            arrived = source.arrivals(uids)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        source.close()
    assert arrived == {uid: NOV_2 + timedelta(minutes=n) for n, uid in enumerate(uids)}  # the same moments
    assert {moment.tzinfo for moment in arrived.values()} == {UTC}  # one tzinfo, not an object per mail
    assert peak < 400 * len(uids)  # the moments kept, one command's answer at a time (before: 1,042 B a mail)


# --- the decisions, without servers ---------------------------------------------------------------

FOUND = Found({1: NOV_2, 2: NOV_20, 3: NOV_10}, highest_uid=4)  # UID 4: marked done by inboxd


def test_choices_read_as_now_all_or_a_day_in_the_team_timezone(config):
    assert parse_choice(" NOW ", config) == NOW and parse_choice("all", config) == ALL
    day = parse_choice("2026-11-15", config)
    assert isinstance(day, datetime) and day.isoformat() == "2026-11-15T00:00:00+01:00"
    with pytest.raises(InboxdError, match="say now, all, or a day like 2026-11-01"):
        parse_choice("yesterday", config)


def test_each_choice_says_where_reading_starts():
    assert adoption(NOW, True, FOUND) == Adoption(4, 4, None, True)
    assert adoption(ALL, False, FOUND) == Adoption(0, 4, None, False)
    assert adoption(NOV_10, True, FOUND) == Adoption(0, 4, NOV_10, True)


def test_left_alone_goes_by_date_not_by_uid_and_skips_what_inboxd_marked_done():
    assert left_alone([1, 2, 3, 4, 5], 4, NOV_10, FOUND.arrivals) == {1, 4}  # 3 arrived on the day itself
    assert left_alone([1, 2, 3, 4, 5], 4, None, FOUND.arrivals) == {4}  # 5 came after adoption: never left


def test_the_message_names_what_is_there_and_the_exact_commands(config):
    text = first_contact_message(config, FOUND)
    assert "already holds 3 mail(s)" in text and "from Mon 02 Nov 2026 10:00 to Fri 20 Nov 2026 10:00 CET" in text
    assert f"inboxd --config {config.path} adopt 2026-11-13" in text and "(1 of 3)" in text
    assert describe(adoption(NOW, True, FOUND), FOUND, config).endswith("reads the mail that arrives from now on")


def test_the_daemon_stops_at_first_contact_before_reading_any_mail(tmp_path, clock):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('first_contact = "all"', 'first_contact = "stop"'))
    source = FakeSource()
    source.add([make_mail()], at=NOV_20)
    daemon = Daemon(load_config(path), clock=clock, source=source, transport=FakeTransport())
    with pytest.raises(InboxdError, match="first contact"):
        daemon.once()
    assert source.fetches == [] and source.done == []


def test_first_contact_in_the_config_is_stop_or_all(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('first_contact = "all"', 'first_contact = "answer"'))
    with pytest.raises(ConfigError, match=r"\[mailbox\] first_contact: must be \"stop\""):
        load_config(path)


def test_once_keeps_four_refs_of_the_items_it_created_however_many() -> None:
    created = Created()
    for number in range(1, 3):
        created.add(f"IT-{number}")
    assert (created.count, str(created)) == (2, "IT-1, IT-2")
    for number in range(3, 10_001):
        created.add(f"IT-{number}")
    assert (created.count, created.kept, str(created)) == (10_000, ["IT-1", "IT-2", "IT-3", "IT-10000"], "IT-1 … IT-10000")
