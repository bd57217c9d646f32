"""Upgrades, backups and database errors: read-only commands create nothing, `migrate` backs up first,
`backup` copies a live database, a database that cannot be opened is one line from every command, and
`once` ends with a line saying what it left undone."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from inboxd.cli import cli
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.errors import ConfigError, InboxdError
from inboxd.models import LATEST_SCHEMA, Item, open_database
from inboxd.outbox import FakeTransport
from inboxd.servers import HOST, append_messages, free_port
from inboxd.source import FakeSource

from helpers import make_mail, write_config
from postgres import server_for_tests

V1 = (Path(__file__).parent / "data" / "schema_v1.sql").read_text()
READ_ONLY = [["items"], ["items", "--all", "--json"], ["item", "IT-1"], ["sweep", "--dry-run"], ["health"]]
EVERY_COMMAND = [*READ_ONLY, ["run"], ["once"], ["sweep"], ["migrate"], ["backup", "copy.db"]]


def invoke(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    assert isinstance(result.exception, SystemExit | None), result.exception  # no traceback: handled
    return result.exit_code, result.output


def with_database(tmp_path: Path, url: str) -> Path:
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{url}"'))
    return config


def v1_database(tmp_path: Path) -> Path:
    """A database as the first version of inboxd left it, with one item."""
    path = tmp_path / "inboxd.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1)
    return path


def schema(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT MAX(version) FROM schemaversion").fetchone()[0]


# --- read-only commands never create or migrate ---------------------------------------------------

@pytest.mark.parametrize("args", READ_ONLY)
def test_read_only_commands_on_a_missing_database_say_so_and_create_nothing(tmp_path, args):
    config = write_config(tmp_path)
    code, out = invoke(config, *args)
    assert code == 1 and "inboxd.db: no such file (a mistyped path?" in out and "Traceback" not in out
    assert not list(tmp_path.glob("inboxd.db*"))


@pytest.mark.parametrize("args", READ_ONLY)
def test_read_only_commands_on_an_old_schema_say_run_migrate_and_change_nothing(tmp_path, args):
    database = v1_database(tmp_path)
    before = database.read_bytes()
    code, out = invoke(write_config(tmp_path), *args)
    assert code == 1 and f"its schema is version 1, this inboxd needs {LATEST_SCHEMA}: run `inboxd migrate`" in out
    assert database.read_bytes() == before and schema(database) == 1 and not list(tmp_path.glob("*.bak"))


# --- migrations back up first ---------------------------------------------------------------------

def test_migrate_backs_an_old_database_up_first_then_brings_it_up_to_date(tmp_path):
    database = v1_database(tmp_path)
    code, out = invoke(write_config(tmp_path), "migrate")
    [copy] = tmp_path.glob("inboxd.db.schema1-*.bak")
    assert code == 0 and f"schema version 1 brought up to {LATEST_SCHEMA}; the copy taken before is {copy}" in out
    assert schema(copy) == 1 and schema(database) == LATEST_SCHEMA  # the copy is the database as it was
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT subject FROM item").fetchall() == [("Old request",)]
    assert "up to date; nothing to do" in invoke(write_config(tmp_path), "migrate")[1]
    assert len(list(tmp_path.glob("*.bak"))) == 1  # nothing to migrate: no copy


def test_migrate_fills_in_what_the_figures_need_for_items_from_before(tmp_path):
    database = v1_database(tmp_path)
    with sqlite3.connect(database) as conn:  # acknowledged after 30 s; answered at 10:00 Berlin on Monday
        conn.execute("UPDATE item SET acknowledged_at = '2026-11-01 09:00:30', first_response_at = '2026-11-02 09:00:00'")
    assert invoke(write_config(tmp_path), "migrate")[0] == 0
    with sqlite3.connect(database) as conn:
        row = conn.execute("SELECT first_response_minutes, acknowledged_quickly, heard_at FROM item").fetchone()
    assert row == (60, 1, "2026-11-01 09:00:00")  # Berlin opens at 09:00 (08:00 UTC); heard: when it came in


def test_run_and_once_migrate_after_the_same_backup(tmp_path):
    v1_database(tmp_path)
    Daemon(load_config(write_config(tmp_path)), source=FakeSource(), transport=FakeTransport())
    [copy] = tmp_path.glob("inboxd.db.schema1-*.bak")
    assert schema(copy) == 1 and schema(tmp_path / "inboxd.db") == LATEST_SCHEMA


def test_migrate_creates_a_new_database_without_a_backup(tmp_path):
    code, out = invoke(write_config(tmp_path), "migrate")
    assert code == 0 and f"created at schema version {LATEST_SCHEMA}" in out and not list(tmp_path.glob("*.bak"))


def test_a_database_newer_than_this_inboxd_is_refused(tmp_path):
    config = write_config(tmp_path)
    invoke(config, "migrate")
    with sqlite3.connect(tmp_path / "inboxd.db") as conn:
        conn.execute("INSERT INTO schemaversion VALUES (?, '2030-01-01')", (LATEST_SCHEMA + 1,))
    for args in (["migrate"], ["items"]):
        code, out = invoke(config, *args)
        assert code == 1 and "made by a newer inboxd" in out


# --- backup ---------------------------------------------------------------------------------------

def test_backup_copies_a_database_in_use_and_holds_its_items(tmp_path):
    config = write_config(tmp_path)
    invoke(config, "migrate")
    database = open_database(f"sqlite:///{tmp_path / 'inboxd.db'}")
    try:
        Item.create(subject="Printer on fire", requester="rosa@example.org", queue="default",
                    created_at=datetime(2026, 11, 30, 8, tzinfo=UTC), secret="s")
    finally:
        database.close()
    writer = sqlite3.connect(tmp_path / "inboxd.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another inboxd in the middle of a write: the copy does not wait for it
    writer.execute("UPDATE item SET subject = 'not committed'")
    try:
        code, out = invoke(config, "backup", str(tmp_path / "copy.db"))
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert code == 0 and f"(schema {LATEST_SCHEMA}, 1 item(s)) to {tmp_path / 'copy.db'}" in out
    with sqlite3.connect(tmp_path / "copy.db") as conn:
        assert conn.execute("SELECT subject, requester FROM item").fetchall() == [
            ("Printer on fire", "rosa@example.org")]
    assert sorted(p.name for p in tmp_path.glob("copy.db*")) == ["copy.db"]  # one file, no -wal beside it
    code, out = invoke(config, "backup", str(tmp_path / "copy.db"))
    assert code == 1 and "already exists" in out and not list(tmp_path.glob("*.partial"))


def test_backup_of_postgresql_says_pg_dump(tmp_path):
    code, out = invoke(with_database(tmp_path, "postgresql://inboxd:hunter2@db.example.org/inboxd"),
                       "backup", "x.dump")
    assert code == 1 and "use pg_dump --format=custom --file=x.dump" in out and "hunter2" not in out
    assert not (tmp_path / "x.dump").exists()


# --- a database that cannot be opened: one line, exit 1, no password ------------------------------

def one_line_error(config: Path, args: list[str], password: str = "") -> str:
    """The one line saying what is wrong with the database (health lists it with what else it saw)."""
    code, out = invoke(config, *args)
    lines = [line.strip() for line in out.strip().splitlines()]
    said = [line for line in lines if line.startswith(("error: ", "database:"))]
    assert code == 1 and "Traceback" not in out and len(said) == 1, out
    assert args[0] == "health" or len(lines) == 1, out
    assert not password or password not in out
    return said[0]


@pytest.mark.parametrize("args", EVERY_COMMAND)
def test_a_database_in_a_missing_folder_is_one_line_from_every_command(tmp_path, args):
    config = with_database(tmp_path, f"sqlite:///{tmp_path / 'no' / 'such' / 'inboxd.db'}")
    line = one_line_error(config, args)
    assert "no/such/inboxd.db" in line and not (tmp_path / "no").exists()


@pytest.mark.server
@pytest.mark.parametrize("args", EVERY_COMMAND)
def test_postgresql_down_is_one_line_from_every_command_without_the_password(tmp_path, args):
    config = with_database(tmp_path, f"postgresql://inboxd:hunter2@{HOST}:{free_port()}/inboxd")
    line = one_line_error(config, args, password="hunter2")
    assert "postgresql://inboxd:***@" in line or args[0] == "backup"
    assert "Connection refused" in line or args[0] == "backup"


@pytest.fixture(scope="module")
def postgres_with_passwords():
    """A PostgreSQL that checks passwords (scram-sha-256): the role inboxd's is "right"."""
    with server_for_tests() as server:
        import psycopg2
        with psycopg2.connect(host=HOST, port=server.port, user=server.user, dbname="postgres") as conn:
            conn.cursor().execute("ALTER ROLE inboxd PASSWORD 'right'")
        hba = server.tmp / "data" / "pg_hba.conf"
        hba.write_text(hba.read_text().replace(" trust", " scram-sha-256"))
        server.proc.send_signal(signal.SIGHUP)  # reload: from now on a password is checked
        yield server


@pytest.mark.server
@pytest.mark.parametrize("args", [["items"], ["once"], ["migrate"], ["health"]])
def test_a_wrong_postgresql_password_is_one_line(tmp_path, postgres_with_passwords, args):
    import time
    url = f"postgresql://inboxd:wrong-one@{HOST}:{postgres_with_passwords.port}/postgres"
    config = with_database(tmp_path, url)
    for _ in range(50):  # the reload is asynchronous: wait until the server asks for passwords
        if "password authentication failed" in invoke(config, "items")[1]:
            break
        time.sleep(0.1)
    line = one_line_error(config, args, password="wrong-one")
    assert 'password authentication failed for user "inboxd"' in line


@pytest.mark.server
def test_the_installed_command_prints_no_traceback_for_postgresql_down(tmp_path):
    config = with_database(tmp_path, f"postgresql://inboxd:hunter2@{HOST}:{free_port()}/inboxd")
    done = subprocess.run([sys.executable, "-m", "inboxd.cli", "--config", str(config), "once"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "hunter2" not in done.stderr
    assert done.stderr.startswith("error: database postgresql://inboxd:***@") and done.stderr.count("\n") == 1


# --- `once` says in its last line what it left undone ---------------------------------------------

@pytest.mark.server
def test_once_exits_1_when_mail_could_not_be_delivered_and_0_once_it_is(tmp_path, mailbox, smtp_capture):
    closed = free_port()
    config = write_config(tmp_path, imap_port=mailbox.port, smtp_port=closed, imap_user=mailbox.user,
                          imap_password=mailbox.password)
    append_messages(mailbox, [make_mail("rosa@example.org", "Printer on fire", "Please help.")])
    done = subprocess.run([sys.executable, "-m", "inboxd.cli", "--config", str(config), "once"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].endswith("; 0 parked, 2 undelivered (the log above says why; what can be "
                                                 "retried stays in the outbox)")
    config.write_text(config.read_text().replace(f"port = {closed}", f"port = {smtp_capture.port}"))
    with sqlite3.connect(tmp_path / "inboxd.db") as conn:  # no waiting for the retry's backoff
        conn.execute("UPDATE outbox SET next_attempt_at = '2000-01-01 00:00:00'")
    done = subprocess.run([sys.executable, "-m", "inboxd.cli", "--config", str(config), "once"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and len(smtp_capture.messages) == 2, done.stderr  # the ack and the announcement


# --- the config: a database URL shown without its password, [http] listen -------------------------

@pytest.mark.parametrize("url, says", [
    ("mysql://inboxd:hunter2@db.example.org/inboxd", "must start with sqlite:/// or postgresql://, got "
                                                     "'mysql://inboxd:***@db.example.org/inboxd"),
    ("postgresql://inboxd:hunter2@db.example.org:54x2/inboxd", "the port is not a number in "
                                                               "'postgresql://inboxd:***@db.example.org:54x2/inboxd"),
])
def test_a_wrong_database_url_is_named_without_its_password(tmp_path, url, says):
    code, out = invoke(with_database(tmp_path, url), "items")
    assert code == 1 and says in out and "hunter2" not in out


@pytest.mark.parametrize("listen, ok", [("127.0.0.1:9425", True), ("[::1]:9425", True), ("9425", False),
                                        ("localhost:http", False), ("127.0.0.1:70000", False)])
def test_http_listen_is_host_and_port(tmp_path, listen, ok):
    config = write_config(tmp_path, extra=f'[http]\nlisten = "{listen}"\n')
    if ok:
        assert load_config(config).http_listen[1] == 9425
    else:
        with pytest.raises(ConfigError, match=r"\[http\] listen: expected host:port"):
            load_config(config)


def test_migrate_refuses_while_an_inboxd_works_on_the_database(tmp_path):
    from inboxd.instance import InstanceLock
    database = v1_database(tmp_path)
    config = write_config(tmp_path)
    running = InstanceLock(load_config(config, secrets=False))
    running.acquire()
    try:
        code, out = invoke(config, "migrate")
    finally:
        running.release()
    assert code == 1 and "another inboxd is working on" in out and "stop it first" in out
    assert schema(database) == 1 and not list(tmp_path.glob("*.bak"))


def test_a_new_inboxd_started_beside_a_running_one_does_not_migrate_under_it(tmp_path):
    from inboxd.instance import InstanceLock
    database = v1_database(tmp_path)
    config = load_config(write_config(tmp_path))
    running = InstanceLock(config)  # the old version, still at work
    running.acquire()
    try:
        with pytest.raises(InboxdError, match="another inboxd is working on .* stop it first"):
            Daemon(config, source=FakeSource(), transport=FakeTransport())
        assert schema(database) == 1 and not list(tmp_path.glob("*.bak"))
    finally:
        running.release()
    Daemon(config, source=FakeSource(), transport=FakeTransport())  # once it stopped: backed up, migrated
    assert schema(database) == LATEST_SCHEMA and len(list(tmp_path.glob("inboxd.db.schema1-*.bak"))) == 1
