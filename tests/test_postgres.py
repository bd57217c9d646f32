"""The scale-out path: the same pipeline and commands on PostgreSQL instead of SQLite."""

from __future__ import annotations

import json
from contextlib import closing

import pytest
from click.testing import CliRunner
from helpers import make_mail, write_config

from inboxd.cli import cli
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.models import Event, Item, Message, Outbox
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource


def test_pipeline_and_commands_on_postgres(tmp_path, postgres):
    url = postgres.create_database("inboxd_pipeline")
    config_path = write_config(tmp_path, extra="")
    config_path.write_text(config_path.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{url}"'))
    daemon = Daemon(load_config(config_path), source=FakeSource(), transport=FakeTransport())
    daemon.source.add([make_mail("rosa@example.org", "Printer jam", message_id="<pg-1@example.org>"),
                       make_mail("ken@example.org", "payroll slip"),
                       make_mail("rosa@example.org", "Printer jam", message_id="<pg-1@example.org>")])
    outcomes = []
    daemon.listeners.append(outcomes.append)
    daemon.ingest(daemon.source.open())
    assert daemon.sender.drain() == 4  # assigned + ack, forward + notice
    assert [o.kind for o in outcomes] == ["item", "redirected", "duplicate"]
    item = Item.get()
    assert item.owner == "ana@example.org" and item.tags == ["printer"] and item.language == "en"
    assert item.acknowledged_at is not None and item.acknowledged_at.tzinfo is not None
    assert Outbox.select().where(Outbox.status == "sent").count() == 4
    assert bytes(Outbox.get().raw).startswith(b"Content-Type:")
    assert Message.select().where(Message.direction == "in").count() == 2
    result = CliRunner().invoke(cli, ["--config", str(config_path), "items", "--all", "--json"])
    assert result.exit_code == 0, result.output
    assert [(i["ref"], i["queue"]) for i in json.loads(result.output)] == [("IT-1", "facilities")]


def test_the_per_mail_queries_composed_once_on_postgres(tmp_path, postgres):
    """Round-robin, least-loaded and "the same text again": the composed SQL reads the same on PostgreSQL."""
    url = postgres.create_database("inboxd_composed")
    config_path = write_config(tmp_path)
    config_path.write_text(config_path.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{url}"'))
    daemon = Daemon(load_config(config_path), source=FakeSource(), transport=FakeTransport())
    echo = "I am away until Monday and will read your mail then."
    daemon.source.add([make_mail("a@example.org", "Printer jam"), make_mail("b@example.org", "Printer jam"),
                       make_mail("c@example.org", "Wi-Fi not working"), make_mail("d@example.org", "VPN is down"),
                       make_mail("robot@example.net", "Re: [IT-9] We have your request", echo),
                       make_mail("robot@example.net", "RE: [IT-10] AW: We have your request", echo)])
    daemon.ingest(daemon.source.open())
    owners = [(i.queue, i.owner) for i in Item.select().order_by(Item.id)][:4]
    assert owners == [("facilities", "ana@example.org"), ("facilities", "bo@example.org"),
                      ("ops", "ana@example.org"), ("ops", "ana@example.org")]  # round-robin; ops has one member
    (capped,) = Event.select().where(Event.kind == "flood-cap")
    assert "same text as IT-5" in capped.detail and capped.item_id == 6


def test_a_conversation_and_the_v1_upgrade_on_postgres(tmp_path, postgres):
    from conversation_helpers import Conversation

    from inboxd.models import open_database
    url = postgres.create_database("inboxd_conversation")
    database = open_database(url)  # a v1 database: the columns of migration 2 dropped, its row forgotten
    for table, column in (("item", "secret"), ("item", "waiting_on"), ("item", "on_track"), ("item", "follows_id"),
                          ("message", "body")):
        database.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
    database.execute_sql('DROP INDEX "message_message_id"')
    database.execute_sql("DELETE FROM schemaversion WHERE version = 2")
    database.close()
    config_path = write_config(tmp_path)
    config_path.write_text(config_path.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{url}"'))
    talk = Conversation(Daemon(load_config(config_path), source=FakeSource(), transport=FakeTransport()))
    talk.owner_says("#take\n#tag +screen\n#waiting\nWhich model is it?")
    assert (talk.item.owner, talk.item.status, talk.item.tags) == ("ana@example.org", "waiting", ["screen"])
    talk.requester_says("A Dell U2720Q.")
    talk.owner_says("#ontrack\n#done")
    talk.requester_says("5")
    item = talk.item
    assert (item.status, item.satisfaction, item.on_track, item.waiting_on) == ("done", 5, True, None)
    assert item.first_response_at is not None and len(item.secret) == 32  # migration 5


def test_the_instance_lock_is_an_advisory_lock_on_postgres(tmp_path, postgres):
    from inboxd.instance import AlreadyRunning, InstanceLock
    url = postgres.create_database("inboxd_lock")
    config_path = write_config(tmp_path)
    config_path.write_text(config_path.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{url}"'))
    config = load_config(config_path)
    first, second = InstanceLock(config), InstanceLock(config)
    assert first.acquire()
    with pytest.raises(AlreadyRunning, match="already working on inboxd@127.0.0.1"):
        second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_the_jobs_on_postgres_each_once(tmp_path, postgres):
    from datetime import datetime, timedelta, timezone

    from conversation_helpers import Conversation
    from peewee import IntegrityError

    from inboxd.clock import FixedClock
    from inboxd.models import Notice
    url = postgres.create_database("inboxd_jobs")
    config_path = write_config(tmp_path, extra="")
    config_path.write_text(config_path.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{url}"'))
    clock = FixedClock(datetime(2026, 11, 16, 9, 0, tzinfo=timezone.utc))  # Monday 10:00 in Berlin
    daemon = Daemon(load_config(config_path), clock=clock, source=FakeSource(), transport=FakeTransport())
    talk = Conversation(daemon)
    talk.owner_says("#take")
    clock.advance(timedelta(days=7, minutes=5))  # a week later: Monday's digest is due, and the date has passed
    first = daemon.sweep()
    assert sorted(d.kind for d in first) == ["deadline_notice", "digest", "digest", "escalation", "owner_reminder"]
    assert daemon.sweep() == []  # the unique Notice rows (and the digests' partial index) hold on PostgreSQL
    assert Notice.select().count() == 5 and Notice.select().where(Notice.item.is_null()).count() == 2
    with pytest.raises(IntegrityError):  # a second digest for the same week and audience cannot be recorded
        Notice.create(kind="digest", audience="team", for_date=first[-1].for_date, created_at=clock.now())


def test_the_v4_upgrade_on_postgres(postgres):
    from test_models import v4_upgrade_scenario
    v4_upgrade_scenario(postgres.create_database("inboxd_v4"))


def test_the_v11_upgrade_on_postgres(postgres):
    from test_models import v11_upgrade_scenario
    v11_upgrade_scenario(postgres.create_database("inboxd_v11"))


def test_a_dry_run_on_postgres_rolls_everything_back(tmp_path, postgres):
    import psycopg2

    from inboxd.preview import preview_once
    url = postgres.create_database("inboxd_dry_run")
    config_path = write_config(tmp_path)
    config_path.write_text(config_path.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{url}"'))
    config = load_config(config_path)
    daemon = Daemon(config, source=FakeSource(), transport=FakeTransport())
    daemon.source.add([make_mail("rosa@example.org", "Printer jam")])
    daemon.ingest(daemon.source.open())
    daemon.source.add([make_mail("ken@example.org", "Please help with thing 7")])

    def rows() -> dict[str, list]:
        with closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
            found = {}
            for table in ("item", "message", "event", "outbox", "mailboxstate", "notice", "absence", "schemaversion"):
                cursor.execute(f'SELECT * FROM "{table}" ORDER BY 1')
                found[table] = cursor.fetchall()
            return found

    before = rows()
    report = preview_once(config, source=daemon.source)
    assert "would create IT-2" in report and "would send ack to ken@example.org" in report
    assert rows() == before and daemon.source.done == [1]


def test_the_figures_on_postgres_equal_sqlite_and_the_events(tmp_path, postgres):
    from month_data import END, START, simulate
    from test_stats import PERIOD, comparable, independent_figures

    def figures(month):
        result = CliRunner().invoke(cli, ["--config", str(month.config_path), "stats", *PERIOD, "--by", "week",
                                          "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    on_sqlite = figures(simulate(tmp_path / "sqlite", requests=200))
    month = simulate(tmp_path / "pg", requests=200, database_url=postgres.create_database("inboxd_figures"))
    on_postgres = figures(month)
    assert on_postgres == on_sqlite
    total = comparable(on_postgres["total"])
    expected = independent_figures(month, START, END, END)
    assert {key: total[key] for key in expected} == expected
    assert total["late_without_notice"] > 0 and total["silent"] > 0 and total["dates_moved"] > 0
