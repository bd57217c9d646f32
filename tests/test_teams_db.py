"""Teams in the database: each row a team's, from the thread's team; rows from before adopted; migration 12."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import peewee as pw
import pytest
from click.testing import CliRunner
from inboxd.cli import cli
from inboxd.config import load_config, load_teams
from inboxd.daemon import Daemon
from inboxd.models import (
    _COMPOSED,
    MIGRATIONS,
    Event,
    Item,
    Message,
    Notice,
    Outbox,
    SchemaVersion,
    adopt_rows,
    last_owner,
    create,
    open_database,
    same_text_requests,
    schema_version_of,
    team,
    use_team,
)
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource

from helpers import make_mail, write_config

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
HR = """\
[team]
name = "HR"
address = "hr@example.org"
ref_prefix = "HR"

[mailbox]
user = "hr"
"""


def an_item(subject: str = "Badge") -> Item:
    return create(Item, subject=subject, requester="rosa@example.org", queue="default", created_at=NOW, secret="s")


def test_a_row_belongs_to_the_team_of_the_thread_that_wrote_it(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'teams.db'}")
    try:
        use_team("HR")
        hr = an_item()
        Event.create(item=hr, at=NOW, actor="inboxd", kind="created")  # peewee's own create too
        other: list[str] = []

        def in_a_new_thread() -> None:  # a thread starts with no team: it must say which it works for
            other.append(team())
            use_team("IT")
            an_item()

        worker = threading.Thread(target=in_a_new_thread)
        worker.start()
        worker.join()
        assert other == [""] and team() == "HR"  # another thread's choice is not this one's
        assert [(i.subject, i.team) for i in Item.select().order_by(Item.id)] == [("Badge", "HR"), ("Badge", "IT")]
        assert Event.get().team == "HR"
    finally:
        database.close()


def test_the_same_mail_is_a_request_to_each_team_but_once_to_one(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'teams.db'}")
    try:
        for key in ("IT", "HR"):
            use_team(key)
            create(Message, message_id="<same@x>", fingerprint="f", direction="in", created_at=NOW)
        with pytest.raises(pw.IntegrityError), database.atomic():
            create(Message, message_id="<same@x>", fingerprint="f", direction="in", created_at=NOW)
    finally:
        database.close()


def back_to_schema_10(url: str) -> None:
    """A database as schema 10 left it, with rows: no team columns, the indexes of before."""
    database = open_database(url)
    use_team("gone")  # dropped with its column below
    for mailbox in ("hr@host/INBOX", "hr@host/INBOX", "it@host/INBOX"):
        item = an_item()
        record = create(Message, message_id=f"<{item.id}@x>", direction="in", mailbox=mailbox, item=item,
                        created_at=NOW)
        create(Event, item=item.id, message=record, at=NOW, actor="rosa@example.org", kind="created")
        create(Outbox, item=item.id, kind="ack", recipients=["rosa@example.org"], sender="hr@example.org",
               subject="s", message_id=f"<ack-{item.id}@x>", raw=b"", next_attempt_at=NOW, created_at=NOW)
    create(Notice, kind="digest", for_date=NOW, audience="team", created_at=NOW)
    use_team("")
    for statement in (*(f"DROP INDEX item_team_{name}" for name in ("status_due_at", "status_last_told_at",
                                                                    "created_at", "resolved_at", "queue_id")),
                      "CREATE INDEX item_status_due_at ON item (status, due_at)",
                      "DROP INDEX message_team_direction_message_id_fingerprint",
                      "DROP INDEX notice_team_digest_once",
                      *(f"ALTER TABLE {table} DROP COLUMN team" for table in ("item", "message", "outbox",
                                                                               "event", "notice")),
                      "CREATE UNIQUE INDEX message_direction_message_id_fingerprint ON message "
                      "(direction, message_id, fingerprint)",
                      "CREATE UNIQUE INDEX notice_digest_once ON notice (kind, audience, for_date) "
                      "WHERE item_id IS NULL"):
        database.execute_sql(statement)
    SchemaVersion.delete().where(SchemaVersion.version.in_([12, 14])).execute()  # 14's index is on team
    database.close()


def migration_12_scenario(url: str) -> None:
    """Migration 12 on a database with rows: each table gains its team column, the old rows adopted by one team."""
    back_to_schema_10(url)
    database = open_database(url)
    try:
        indexes = {i.name for table in ("item", "message", "notice") for i in database.get_indexes(table)}
        assert {"message_team_direction_message_id_fingerprint", "notice_team_digest_once",
                "item_team_status_due_at", "item_team_created_at"} <= indexes
        assert not {"message_direction_message_id_fingerprint", "notice_digest_once", "item_status_due_at"} & indexes
        assert {i.team for i in Item.select()} == {""}  # none of them any team's until adopted
        # The team whose mailbox the old mail was mostly read from takes them all.
        assert adopt_rows([("IT", "it@host/INBOX"), ("HR", "hr@host/INBOX")]) == (
            "HR", {"item": 3, "message": 3, "outbox": 3, "event": 3, "notice": 1})
        assert {m.team for m in (Item, Message, Outbox, Event, Notice) for m in m.select()} == {"HR"}
        assert adopt_rows([("IT", "it@host/INBOX")]) is None  # nothing left from before
        open_database(url)  # a second start applies nothing twice
    finally:
        database.close()


def test_migration_12_on_a_sqlite_database_with_rows(tmp_path: Path) -> None:
    migration_12_scenario(f"sqlite:///{tmp_path / 'v10.db'}")


def test_the_migrations_are_numbered_one_by_one() -> None:
    versions = [version for version, _ in MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1)) and MIGRATIONS[11][1].__name__ == "_v12_teams"


def test_old_rows_go_to_the_first_team_when_no_mailbox_is_theirs(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'teams.db'}")
    try:
        an_item()
        assert adopt_rows([("FAC", "fac@host/INBOX"), ("HR", "hr@host/INBOX")]) == (
            "FAC", {"item": 1, "message": 0, "outbox": 0, "event": 0, "notice": 0})
    finally:
        database.close()


def test_a_lone_config_adopts_the_rows_from_before_under_its_prefix_at_start(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    database = open_database(f"sqlite:///{tmp_path / 'inboxd.db'}")
    an_item("From before teams")
    database.close()
    daemon = Daemon(load_config(path), source=FakeSource(), transport=FakeTransport())
    assert Item.get().team == "IT" and team() == "IT"
    daemon.source.add([make_mail("rosa@example.org", "Re: [IT-1] From before teams", "Still broken")])
    daemon.ingest(daemon.source.open())
    assert Item.select().count() == 1  # the reply found its item: it is this team's now


def test_a_teams_deployment_needs_team_for_what_acts_as_the_daemon(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    (tmp_path / "teams.d").mkdir()
    (tmp_path / "teams.d" / "it.toml").write_text("")
    (tmp_path / "teams.d" / "hr.toml").write_text(HR)
    for command in (["adopt", "now"], ["migrate"], ["report", "--html", "r.html"]):  # health: test_health_teams.py
        result = CliRunner().invoke(cli, ["--config", str(path), *command])
        assert result.exit_code == 1, command
        assert result.output == ("error: several teams: pick one with --team HR|IT (run, once, sweep, check "
                                 "and health serve every team without it)\n")
    result = CliRunner().invoke(cli, ["--config", str(path), "migrate", "--team", "payroll"])
    assert result.exit_code == 1 and result.output == "error: --team payroll: no such team (the teams are HR|IT)\n"
    result = CliRunner().invoke(cli, ["--config", str(path), "migrate", "--team", "hr"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["--config", str(path), "items", "--all"])
    assert result.exit_code == 0 and result.output == "no items\n"
    # Each team's sent log beside the shared SQLite file: one team's settling never takes another's lines.
    assert [c.sent_log_name for c in load_teams(path)] == ["HR.sent", "IT.sent"]
    assert load_config(write_config(tmp_path / "lone")).sent_log_name == "sent"


def test_a_lone_config_takes_its_own_prefix_as_team(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(path), "migrate", "--team", "it"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["--config", str(path), "items", "--team", "HR"])
    assert result.exit_code == 1 and result.output == "error: --team HR: no such team (the teams are IT)\n"


def test_schema_v1_rows_are_adopted_by_migrate(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    with sqlite3.connect(tmp_path / "inboxd.db") as conn:
        conn.executescript((Path(__file__).parent / "data" / "schema_v1.sql").read_text())
    result = CliRunner().invoke(cli, ["--config", str(path), "migrate"])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "inboxd.db") as conn:
        assert conn.execute("SELECT team FROM item").fetchall() == [("IT",)]
        assert conn.execute("SELECT team FROM message").fetchall() == [("IT",)]


def test_migrate_for_one_team_waits_for_every_team_s_daemon_to_stop(tmp_path: Path) -> None:
    from inboxd.instance import InstanceLock
    path = write_config(tmp_path)
    (tmp_path / "teams.d").mkdir()
    (tmp_path / "teams.d" / "it.toml").write_text("")
    (tmp_path / "teams.d" / "hr.toml").write_text(HR)
    hr = next(c for c in load_teams(path, secrets=False) if c.team.key == "HR")
    running = InstanceLock(hr)  # HR's daemon, at work on the shared database
    running.acquire()
    try:
        result = CliRunner().invoke(cli, ["--config", str(path), "migrate", "--team", "IT"])
    finally:
        running.release()
    assert result.exit_code == 1 and f"another inboxd is working on {hr.mailbox.label}" in result.output
    assert schema_version_of(f"sqlite:///{tmp_path / 'inboxd.db'}") == 0  # nothing created under HR's daemon


def plan_of(tmp_path: Path, compose: Callable[[], object], key: object) -> str:
    """SQLite's plan of the statement `compose` makes (as team IT), kept under `key`, on an empty database."""
    database = open_database(f"sqlite:///{tmp_path / 'plan.db'}")
    use_team("IT")
    try:
        compose()
        sql = _COMPOSED[key]
        rows = database.execute_sql("EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?")).fetchall()
        return " ".join(row[-1] for row in rows)
    finally:
        database.close()


def test_the_per_mail_lookups_by_sender_read_the_senders_rows_not_the_teams(tmp_path: Path) -> None:
    """A team-first index must not win over the sender's: it would read every item of the team in the window."""
    plan = plan_of(tmp_path, lambda: same_text_requests("rosa@example.org", "Please help.", NOW),
                   "same_text_requests")
    assert "INDEX item_requester" in plan and "item_team" not in plan, plan


def test_the_round_robin_reads_its_own_teams_queue_newest_first(tmp_path: Path) -> None:
    """Who got a queue's last item: by the team's own queue index, not by `queue` or the ids of every team."""
    plan = plan_of(tmp_path, lambda: last_owner("default", ("ana@example.org", "bo@example.org")), ("last_owner", 2))
    assert "INDEX item_team_queue_id" in plan and "TEMP B-TREE" not in plan, plan


def test_team_names_a_prefix_before_a_file_name(tmp_path: Path) -> None:
    """`--team hr` is HR, not also IT's team because IT's file happens to be hr.toml."""
    path = write_config(tmp_path)
    (tmp_path / "teams.d").mkdir()
    (tmp_path / "teams.d" / "hr.toml").write_text("")  # IT, all of it from config.toml
    (tmp_path / "teams.d" / "people.toml").write_text(HR)
    result = CliRunner().invoke(cli, ["--config", str(path), "migrate", "--team", "hr"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["--config", str(path), "migrate", "--team", "people"])
    assert result.exit_code == 0, result.output


def test_moving_to_teams_d_and_back_settles_the_sent_log_the_last_config_wrote(tmp_path: Path) -> None:
    """A mail the SMTP server took just before a crash is not sent again because the config's shape changed."""
    path = write_config(tmp_path)
    lone = Daemon(load_config(path), source=FakeSource(), transport=FakeTransport())
    lone.source.add([make_mail("rosa@example.org", "Screen flickers")])
    lone.ingest(lone.source.open())
    ack = Outbox.get()
    lone.sender.sent_log.note(ack.message_id, "", datetime(2026, 11, 30, tzinfo=UTC))  # the 250, then the crash
    assert ack.status == "pending" and lone.sender.sent_log.path.name == "inboxd.db.sent"
    (tmp_path / "teams.d").mkdir()
    (tmp_path / "teams.d" / "it.toml").write_text("")
    (tmp_path / "teams.d" / "hr.toml").write_text(HR)
    it = next(c for c in load_teams(path) if c.team.key == "IT")
    moved = Daemon(it, source=FakeSource(), transport=FakeTransport())
    moved.sender.drain()
    assert ["rosa@example.org"] not in [to for _, to, _ in moved.sender.transport.sent]  # the members' went
    assert Outbox.get_by_id(ack.id).status == "sent"
    # And back: what IT's delivery noted under teams.d is settled by the lone config.
    Outbox.update(status="pending").where(Outbox.id == ack.id).execute()  # as if it were a new one
    moved.sender.sent_log.note(ack.message_id, "", datetime(2026, 11, 30, tzinfo=UTC))
    assert moved.sender.sent_log.path.name == "inboxd.db.IT.sent"
    shutil.rmtree(tmp_path / "teams.d")
    back = Daemon(load_config(path), source=FakeSource(), transport=FakeTransport())
    back.sender.drain()
    assert back.sender.transport.sent == [] and Outbox.get_by_id(ack.id).status == "sent"
    assert not (tmp_path / "inboxd.db.IT.sent").exists()  # settled: no line of it is read again


def test_workers_migrating_one_new_postgresql_database_at_once_all_succeed(postgres) -> None:
    """Workers started together on an empty database: one applies the migrations, the others wait and find them."""
    from inboxd.models import LATEST_SCHEMA, apply_migrations, connect_database
    database = connect_database(postgres.create_database("inboxd_migrate_race"))
    start, failures = threading.Barrier(4), []

    def migrate() -> None:
        start.wait()
        try:
            apply_migrations(database)  # each thread on a connection of its own
        except Exception as exc:
            failures.append(exc)
        finally:
            database.close()
    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(row.version for row in SchemaVersion.select()) == list(range(1, LATEST_SCHEMA + 1))
    database.close()
