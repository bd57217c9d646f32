"""The jobs through time: reminders, notices, escalations and updates, each once, on a daemon with fakes."""

from __future__ import annotations

import email
from datetime import datetime, timedelta
from email.message import Message
from zoneinfo import ZoneInfo

import pytest
from conversation_helpers import Conversation, text_of
from helpers import write_config

from inboxd.clock import FixedClock
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.models import Notice, Outbox
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource

BERLIN = ZoneInfo("Europe/Berlin")
JOBS = ("owner_reminder", "deadline_notice", "escalation", "status_update", "digest")


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=BERLIN)


@pytest.fixture
def daemon(tmp_path) -> Daemon:
    config = load_config(write_config(tmp_path, extra="\n[service]\ndigest = false\n"))
    return Daemon(config, clock=FixedClock(at(23, 10)), source=FakeSource(), transport=FakeTransport())


def sweep_every(daemon: Daemon, step: timedelta, until: datetime) -> None:
    """Advance the clock in steps, sweeping and sending after each."""
    while daemon.clock.now() < until:
        daemon.clock.advance(step)
        daemon.sweep()
        daemon.sender.drain()


def jobs_sent() -> list[tuple[str, datetime, list[str]]]:
    """(kind, local time, recipients) of every job mail, in order."""
    rows = Outbox.select().where(Outbox.kind.in_(JOBS)).order_by(Outbox.id)
    return [(r.kind, r.created_at.astimezone(BERLIN), list(r.recipients)) for r in rows]


def last_to(daemon: Daemon, address: str) -> Message:
    """The latest mail the daemon delivered to this address."""
    return next(email.message_from_bytes(raw) for _, to, raw in reversed(daemon.sender.transport.sent)
                if address in to)


def taken(daemon: Daemon) -> Conversation:
    """A request on Monday 10:00 (due Thursday 10:00, in 3 business days) that Ana takes."""
    talk = Conversation(daemon)
    talk.owner_says("#take")
    assert talk.item.owner == "ana@example.org" and talk.item.due_at == at(26, 10)
    return talk


def test_each_job_once_at_its_moment_with_a_sweep_every_minute(daemon):
    talk = taken(daemon)
    sweep_every(daemon, timedelta(minutes=15), at(25, 14))
    sweep_every(daemon, timedelta(minutes=1), at(26, 11))
    assert jobs_sent() == [
        ("owner_reminder", at(25, 14, 30), ["ana@example.org"]),  # 4 business hours before: Wed 14:30-17:30, Thu 9-10
        ("deadline_notice", at(25, 17, 30), ["rosa@example.org"]),  # 1 business hour before: Thu 9-10
        ("escalation", at(26, 10), ["lead@example.org"]),         # at the date
    ]
    notice = last_to(daemon, "rosa@example.org")
    assert notice["In-Reply-To"] == "<request-1@example.org>" and "[IT-1]" in notice["Subject"]
    assert "may not make that date" in text_of(notice)
    escalation = last_to(daemon, "lead@example.org")
    assert "The requester knows" in text_of(escalation)
    assert [e.kind for e in talk.events() if e.kind in JOBS] == ["owner_reminder", "deadline_notice", "escalation"]


def test_a_three_day_outage_catches_up_once(daemon):
    taken(daemon)
    daemon.sweep()
    daemon.clock.moment = at(26, 10, 30) + timedelta(days=3)  # down from Monday to Sunday
    daemon.sweep()
    daemon.sweep()
    sweep_every(daemon, timedelta(minutes=1), daemon.clock.now() + timedelta(minutes=30))
    sent = jobs_sent()
    assert sorted(kind for kind, _, _ in sent) == ["deadline_notice", "escalation", "owner_reminder"]
    assert {when for _, when, _ in sent} == {at(29, 10, 30)}
    overdue = Outbox.get(Outbox.kind == "deadline_notice").raw.decode()
    assert "That date has passed and it is not done yet" in overdue
    escalation = Outbox.get(Outbox.kind == "escalation").raw.decode()
    assert "The requester knows" in escalation  # by the notice of this same sweep


def test_ontrack_suppresses_the_notice_and_a_later_eta_restarts_the_cycle(daemon):
    talk = taken(daemon)
    sweep_every(daemon, timedelta(minutes=15), at(25, 15))
    talk.owner_says("#ontrack")
    assert talk.item.on_track
    sweep_every(daemon, timedelta(minutes=15), at(26, 9, 45))
    assert [kind for kind, _, _ in jobs_sent()] == ["owner_reminder"]  # no notice: Ana confirmed the date
    sweep_every(daemon, timedelta(minutes=15), at(26, 10, 30))
    # The date passed anyway: the lead hears of it, and the requester, silent since Monday, gets an update.
    assert [kind for kind, _, _ in jobs_sent()] == ["owner_reminder", "escalation", "status_update"]
    assert "We missed the date" in text_of(last_to(daemon, "rosa@example.org"))

    changed = talk.owner_says("#eta 2026-12-01 12:00 the replacement part ships on Monday")
    assert [m["To"] for m in changed if "New date" in m["Subject"]] == ["rosa@example.org"]
    assert not talk.item.on_track and talk.item.due_at == at(1, 12, month=12)
    sweep_every(daemon, timedelta(minutes=15), at(1, 13, month=12))
    assert jobs_sent()[3:] == [
        ("owner_reminder", at(30, 16, 30), ["ana@example.org"]),
        ("status_update", at(1, 10, 30, month=12), ["rosa@example.org"]),  # 3 business days after the new date
        ("deadline_notice", at(1, 11, month=12), ["rosa@example.org"]),
        ("escalation", at(1, 12, month=12), ["lead@example.org"]),
    ]


def test_waiting_on_the_requester_pauses_the_clock(daemon):
    talk = taken(daemon)
    daemon.clock.moment = at(24, 10)
    talk.owner_says("#waiting\nWhich monitor model is it?")
    assert talk.item.paused_at == at(24, 10)
    sweep_every(daemon, timedelta(hours=1), at(27, 12))  # days past the date: nothing while paused
    assert jobs_sent() == []
    daemon.clock.moment = at(30, 10)
    talk.requester_says("It is a Dell U2720Q.")
    # Paused Tue 10:00 to Mon 10:00: 7.5 + 8.5 + 8.5 + 8.5 + 1 = 34 business hours after Thursday 10:00.
    assert talk.item.paused_at is None and talk.item.status == "open"
    assert talk.item.due_at == at(2, 10, month=12)
    assert any("clock runs again" in e.detail for e in talk.events("clock"))


def test_status_update_after_three_business_days_of_silence(daemon):
    talk = taken(daemon)
    talk.owner_says("#ontrack")
    talk.owner_says("#eta 2026-12-18 the new screens arrive mid-December")
    sweep_every(daemon, timedelta(hours=1), at(3, 12, month=12))
    updates = [(when, to) for kind, when, to in jobs_sent() if kind == "status_update"]
    # The requester last heard on Monday 10:00 (the new date): Thursday 10:00, then Tuesday 10:00.
    assert updates == [(at(26, 10), ["rosa@example.org"]), (at(1, 10, month=12), ["rosa@example.org"])]
    assert "Still on it" in last_to(daemon, "rosa@example.org")["Subject"]


def test_dry_run_lists_without_sending(daemon):
    taken(daemon)
    due = daemon.sweeper.due(at(26, 10))
    # A status update is due too (silent since Monday 10:00), but the notice already tells the requester.
    assert [(d.kind, d.to) for d in due] == [("owner_reminder", ("ana@example.org",)),
                                             ("deadline_notice", ("rosa@example.org",)),
                                             ("escalation", ("lead@example.org",))]
    assert Notice.select().count() == 0 and Outbox.select().where(Outbox.kind.in_(JOBS)).count() == 0


def test_a_mail_that_cannot_be_rendered_waits_and_the_others_go(tmp_path, caplog):
    import logging
    import shutil

    from helpers import REPO
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    escalation = templates / "escalation.txt"
    good = escalation.read_text()
    escalation.write_text(good.replace("Hello,", '{% if item.ref == "IT-1" %}{{ item.no_such_name }}{% endif %}Hello,'))
    config = load_config(write_config(tmp_path, templates=templates, extra="\n[service]\ndigest = false\n"))
    daemon = Daemon(config, clock=FixedClock(at(23, 10)), source=FakeSource(), transport=FakeTransport())
    Conversation(daemon)
    Conversation(daemon, subject="Keyboard sticks", sender="omar@example.org")
    with caplog.at_level(logging.ERROR, logger="inboxd"):
        sweep_every(daemon, timedelta(minutes=15), at(26, 9, 45))
        sweep_every(daemon, timedelta(minutes=1), at(26, 10, 5))  # IT-1's escalation fails in 5 sweeps
    assert [(kind, when) for kind, when, _ in jobs_sent() if kind == "escalation"] == [("escalation", at(26, 10))]
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1 and failures[0].startswith("IT-1: escalation to lead@example.org not sent")
    assert "escalation.txt" in failures[0]
    escalation.write_text(good)  # the admin fixes the template; the daemon reloads it
    daemon.reload()
    daemon.clock.advance(timedelta(minutes=1))
    assert [(d.kind, d.item.id) for d in daemon.sweep()] == [("escalation", 1)]
