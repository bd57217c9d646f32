"""Promised dates, requested dates, absence, the digest, and `inboxd sweep` on the command line."""

from __future__ import annotations

import email
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from conversation_helpers import Conversation, reply, text_of
from helpers import make_mail, write_config

from inboxd.cli import cli
from inboxd.clock import BusinessCalendar, FixedClock
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.errors import ConfigError
from inboxd.models import Absence, Item, Notice, Outbox
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource

BERLIN = ZoneInfo("Europe/Berlin")
CAL = BusinessCalendar(BERLIN, country="DE")
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN)


def at(day: int, hour: int, minute: int = 0, month: int = 11, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def daemon_for(tmp_path, extra: str = "", moment: datetime = MONDAY, smtp_port: int = 1025) -> Daemon:
    config = load_config(write_config(tmp_path, extra=extra, smtp_port=smtp_port))
    return Daemon(config, clock=FixedClock(moment), source=FakeSource(), transport=FakeTransport())


def test_a_requested_date_is_promised_or_the_ack_says_which_date_can_be(tmp_path):
    daemon = daemon_for(tmp_path)
    later = Conversation(daemon, subject="New starter: Lena", sender="hr@example.org",
                         request=make_mail("hr@example.org", "New starter: Lena", "We need it by 2026-12-04, please."))
    assert later.item.due_at == later.item.requested_due_at == at(4, 17, 30, month=12)
    assert "You asked for it by Friday 4 December 2026, 17:30, and we will have it" in text_of(later.ack)
    sooner = Conversation(daemon, subject="Onboarding: Max", sender="boss@example.org",
                          request=make_mail("boss@example.org", "Onboarding: Max", "Needed by tomorrow."))
    assert sooner.item.requested_due_at == at(24, 17, 30)
    assert sooner.item.due_at == at(26, 10)  # the rule's 3 business days
    assert "the soonest we can\r\npromise is Thursday 26 November 2026, 10:00" in text_of(sooner.ack)
    assert [e.detail for e in sooner.events("requested-date")] == [
        "the requester asked for Tue 24 Nov 2026 17:30: cannot be promised"]


def test_a_date_in_a_mail_without_the_rule_changes_nothing(tmp_path):
    talk = Conversation(daemon_for(tmp_path), request=make_mail(subject="Screen flickers", body="Needed by Friday!"))
    assert talk.item.requested_due_at is None and talk.item.due_at == at(26, 10)


PROVEN = {"Authentication-Results": "mx.example.org; dmarc=pass header.from=example.org"}
DMARC = '[commands]\nauthserv_id = "mx.example.org"\n'  # a new mail's proof: it has no item's reply address


def test_away_by_mail_skips_assignment_and_back_ends_it(tmp_path):
    daemon = daemon_for(tmp_path, extra=DMARC)
    talk = Conversation(daemon)
    answer = talk.send(make_mail("bo@example.org", "away", "#away until 2026-11-30", headers=PROVEN))
    assert [m["To"] for m in answer] == ["bo@example.org"] and "is away until Mon 30 Nov" in text_of(answer[0])
    assert Absence.get(Absence.member == "bo@example.org").until == at(30, 9)
    assert Item.select().count() == 1  # a note about Bo, not a request
    for n in range(3):  # printers go round-robin to Ana and Bo; Bo is away
        talk.send(make_mail(f"p{n}@example.org", f"Printer {n} jammed", "Paper jam."))
    assert [i.owner for i in Item.select().where(Item.queue == "facilities")] == ["ana@example.org"] * 3
    talk.send(make_mail("bo@example.org", "back", "#back", headers=PROVEN))
    talk.send(make_mail("p9@example.org", "Printer 9 jammed", "Paper jam."))
    assert Item.select().order_by(Item.id.desc()).get().owner == "bo@example.org"


def test_absent_in_the_config_and_an_out_of_office_reach_the_escalation(tmp_path):
    daemon = daemon_for(tmp_path, extra='\n[service]\ndigest = false\n')
    talk = Conversation(daemon)
    talk.owner_says("#take")
    mine = talk.last("ana@example.org")
    talk.send(reply(mine, "ana@example.org", "I am out until Monday.", subject="Automatic reply: away",
                    headers={"Auto-Submitted": "auto-replied"}))
    daemon.clock.moment = at(26, 10)
    daemon.sweep()
    daemon.sender.drain()
    escalation = next(email.message_from_bytes(raw) for _, to, raw in daemon.sender.transport.sent
                      if to == ["lead@example.org"])
    assert "ana@example.org answered with an out-of-office reply on Mon 23 Nov" in text_of(escalation)


def test_the_weekly_digest_counts_the_week_once(tmp_path):
    daemon = daemon_for(tmp_path, moment=at(16, 10))
    done = Conversation(daemon, sender="a@example.org")
    done.owner_says("#take")
    done.owner_says("#done swapped the cable")
    done.requester_says("5")
    late = Conversation(daemon, subject="Screen flickers again", sender="b@example.org")
    late.owner_says("#take")
    daemon.clock.moment = at(23, 8, 5)  # Monday 08:00 was the digest's moment
    sent = daemon.sweep()
    digests = {d.audience: d.context["digest"] for d in sent if d.kind == "digest"}
    assert set(digests) == {"team", "ana@example.org"}
    team = digests["team"]
    assert (team["new"], team["done"], team["on_time"], team["satisfaction"], team["late_count"]) == (2, 1, 1, 5.0, 1)
    daemon.clock.advance(timedelta(minutes=1))
    assert [d for d in daemon.sweep() if d.kind == "digest"] == []
    assert Notice.select().where(Notice.kind == "digest").count() == 2
    daemon.sender.drain()
    mail = next(email.message_from_bytes(raw) for _, to, raw in daemon.sender.transport.sent
                if to == ["lead@example.org"] and b"Weekly digest" in raw)
    assert "[IT-2] Screen flickers again" in text_of(mail) and "5.0 of 5 from 1 rating(s)" in text_of(mail)
    assert [p.get_content_type() for p in mail.walk()] == ["multipart/alternative", "text/plain", "text/html"]
    daemon.clock.moment = at(30, 8, 5)  # a week later: the next week's digests, each once
    assert sorted(d.audience for d in daemon.sweep() if d.kind == "digest") == ["ana@example.org", "team"]
    daemon.clock.advance(timedelta(minutes=1))
    assert [d for d in daemon.sweep() if d.kind == "digest"] == []
    assert Notice.select().where(Notice.kind == "digest").count() == 4


def test_no_digest_for_a_week_before_inboxd_was_used(tmp_path):
    daemon = daemon_for(tmp_path)
    Conversation(daemon)
    assert [d for d in daemon.sweep() if d.kind == "digest"] == []


@pytest.mark.parametrize("extra, problem", [
    ('\n[service]\ndigest = "someday"\n', "[service] digest: not a weekday and time: 'someday'"),
    ('\n[service]\ndigest = true\n', "[service] digest: write a weekday and time"),
])
def test_config_digest_is_checked(tmp_path, extra, problem):
    with pytest.raises(ConfigError) as raised:
        load_config(write_config(tmp_path, extra=extra))
    assert problem in str(raised.value)


def test_config_absent_must_be_members(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('[queues]', 'absent = ["zed@example.org"]\n\n[queues]'))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert "[team] absent: 'zed@example.org' is not in [team] members" in str(raised.value)


def test_sweep_command_dry_run_then_real_through_smtp(tmp_path, smtp_capture):
    extra = "\n[service]\ndigest = false\n"
    Conversation(daemon_for(tmp_path, extra, smtp_port=smtp_capture.port)).owner_says("#take")
    path = tmp_path / "config.toml"  # the same config and database
    dry = CliRunner().invoke(cli, ["--config", str(path), "sweep", "--at", "2026-11-26T10:00+01:00", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would send 3 mail(s)" in dry.output and "escalation       IT-1      to lead@example.org" in dry.output
    assert Outbox.select().where(Outbox.kind == "escalation").count() == 0
    real = CliRunner().invoke(cli, ["--config", str(path), "sweep", "--at", "2026-11-26T10:00"])
    assert real.exit_code == 0, real.output
    assert "sent 3 mail(s)" in real.output
    assert smtp_capture.wait_for(3, timeout=10)
    assert sorted(m.rcpt_tos[0] for m in smtp_capture.messages) == ["ana@example.org", "lead@example.org",
                                                                     "rosa@example.org"]
    again = CliRunner().invoke(cli, ["--config", str(path), "sweep", "--at", "2026-11-26T10:05"])
    assert "sent 0 mail(s)" in again.output


def test_sweep_command_refuses_a_moment_it_cannot_read(tmp_path):
    result = CliRunner().invoke(cli, ["--config", str(write_config(tmp_path)), "sweep", "--at", "next week"])
    assert result.exit_code == 2 and "is not an ISO 8601 moment" in result.output


def test_clock_changes_pause_and_restart_purely():
    from inboxd.promises import clock_changes
    waiting = {"status": "open", "waiting_on": None, "due_at": at(26, 10), "paused_at": None}
    changes, line = clock_changes(waiting, {"status": "waiting", "waiting_on": "requester"}, at(24, 10), CAL)
    assert changes == {"paused_at": at(24, 10)} and "paused" in line
    assert clock_changes(waiting, {"status": "waiting", "waiting_on": "the vendor"}, at(24, 10), CAL) == ({}, None)
    paused = {"status": "waiting", "waiting_on": "requester", "due_at": at(26, 10), "paused_at": at(24, 10)}
    changes, line = clock_changes(paused, {"status": "open", "waiting_on": None}, at(24, 12), CAL)
    assert changes == {"paused_at": None, "due_at": at(26, 12)} and "paused 2h00" in line
    assert clock_changes(paused, {"status": "done", "waiting_on": None}, at(24, 12), CAL) == ({"paused_at": None}, None)
    assert clock_changes(paused, {"status": "open", "due_at": at(30, 10)}, at(24, 12), CAL) == (
        {"paused_at": None}, None)  # the same mail set a new date: it stands
    missed = {**paused, "due_at": at(23, 10)}  # the date had passed when the wait began: no pause gives it back
    changes, line = clock_changes(missed, {"status": "open", "waiting_on": None}, at(24, 12), CAL)
    assert changes == {"paused_at": None} and "had passed" in line


@pytest.mark.parametrize("sender, body, problem", [
    ("lead@example.org", "#away until 2026-12-04", "#away: lead@example.org is not a member of IT Help"),
    ("bo@example.org", "#away until 2026-11-20", "#away: 2026-11-20 (Fri 20 Nov 2026 09:00) is in the past"),
    ("bo@example.org", "#away until someday", "#away: 'someday' is not a date"),
    ("bo@example.org", "#away", "#away needs the day you are back"),
])
def test_away_is_refused_with_the_reason(tmp_path, sender, body, problem):
    talk = Conversation(daemon_for(tmp_path, extra=DMARC))
    (answer,) = talk.send(make_mail(sender, "away", body, headers=PROVEN))
    assert answer["To"] == sender and "Not applied" in answer["Subject"] and problem in text_of(answer)
    assert Absence.select().count() == 0 and Item.select().count() == 1
