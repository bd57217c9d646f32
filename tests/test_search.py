"""History and search: `inboxd items` with its filters and `inboxd item`'s other items, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from inboxd import search
from inboxd.cli import cli
from inboxd.clock import FixedClock
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.models import SEARCH_INDEX, Message, db, open_database
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource

from conftest import MONDAY_10
from conversation_helpers import Conversation
from helpers import make_mail, write_config

_databases = itertools.count(1)


def invoke(daemon: Daemon, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(daemon.config.path), *args])
    return result.exit_code, result.output


def refs(daemon: Daemon, *args: str) -> list[str]:
    """The refs `items --all --json` lists with these filters."""
    code, out = invoke(daemon, "items", "--all", "--json", *args)
    assert code == 0, out
    return [i["ref"] for i in json.loads(out)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.server)])
def desk(request, tmp_path) -> Daemon:
    """A help desk with three requests, one a day from Monday, and some conversation on them.

    IT-1 rosa: a printer (tag `printer`), a later reply naming the model;
    IT-2 ken: VPN, tagged `print` by its owner; IT-3 rosa: a mouse, done.
    """
    config_path = write_config(tmp_path)
    if request.param == "postgres":
        url = request.getfixturevalue("postgres").create_database(f"inboxd_search_{next(_databases)}")
        config_path.write_text(config_path.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{url}"'))
    daemon = Daemon(load_config(config_path), clock=FixedClock(MONDAY_10), source=FakeSource(),
                    transport=FakeTransport())
    printer = Conversation(daemon, "Printer jam", request=make_mail(
        "Rosa Lind <rosa@example.org>", "Printer jam", "The printer on floor 3 eats paper."))
    printer.requester_says("It is a Kyocera FS-1020, bought in 2019.")
    daemon.clock.advance(timedelta(days=1))
    vpn = Conversation(daemon, "VPN is down", "ken@example.org", request=make_mail(
        "ken@example.org", "VPN is down", "Cannot reach the intranet since this morning."))
    vpn.owner_says("#tag +print")
    daemon.clock.advance(timedelta(days=1))
    mouse = Conversation(daemon, "New mouse", request=make_mail(
        "ROSA@Example.ORG", "New mouse", 'My mouse double-clicks: "sticky" (NEAR the desk) -- see *.log'))
    mouse.owner_says("#done")
    return daemon


def test_a_word_of_the_opening_mail_or_of_a_later_reply_finds_the_item(desk):
    assert refs(desk, "--search", "eats") == ["IT-1"]
    assert refs(desk, "--search", "KYOCERA") == ["IT-1"]  # only in Rosa's reply; any case
    assert refs(desk, "--search", "paper kyocera") == ["IT-1"]  # every word, each in a mail of its own
    assert refs(desk, "--search", "intranet") == ["IT-2"]
    assert refs(desk, "--search", "paper intranet") == []
    assert refs(desk, "--search", "jam") == ["IT-1"]  # the subject
    ours = Message.select().where((Message.direction == "out") & Message.body.contains("in our queue"))
    assert ours.count() == 2 and refs(desk, "--search", "queue") == []  # what people wrote, not our templates


def test_the_requester_any_case_and_the_filters_together(desk):
    assert refs(desk, "--requester", "Rosa@Example.org") == ["IT-1", "IT-3"]
    assert refs(desk, "--requester", "rosa@example") == []  # the whole address
    assert refs(desk, "--requester", "rosa@example.org", "--search", "mouse") == ["IT-3"]
    assert refs(desk, "--requester", "rosa@example.org", "--status", "done") == ["IT-3"]
    assert refs(desk, "--requester", "rosa@example.org", "--search", "paper", "--status", "done") == []
    assert refs(desk, "--since", "2026-11-24") == ["IT-2", "IT-3"]  # midnight in Berlin
    assert refs(desk, "--since", "2026-11-24T10:00+01:00") == ["IT-2", "IT-3"]
    assert refs(desk, "--since", "2026-11-24T10:00:01+01:00") == ["IT-3"]
    assert refs(desk, "--since", "2026-11-24", "--requester", "rosa@example.org") == ["IT-3"]
    assert refs(desk, "--queue", "facilities", "--search", "printer") == ["IT-1"]


def test_status_is_all_statuses_and_a_count_line_says_how_many_match(desk):
    code, out = invoke(desk, "items", "--requester", "rosa@example.org")
    assert code == 0 and "IT-1" in out and "IT-3" not in out and out.endswith("1 item(s) match\n")
    code, out = invoke(desk, "items", "--status", "done")
    assert code == 0 and "IT-3" in out and "IT-1" not in out and "1 item(s) match" in out
    code, out = invoke(desk, "items", "--search", "nothing-like-this")
    assert code == 0 and out == "0 item(s) match\n"
    code, out = invoke(desk, "items")
    assert code == 0 and "match" not in out  # no filter, no count
    code, out = invoke(desk, "items", "--status", "finished")
    assert code == 2 and "'finished' is not one of" in out and "'redirected'" in out
    code, out = invoke(desk, "items", "--since", "last week")
    assert code == 2 and "'last week' is not an ISO 8601 date or moment" in out


def test_a_tag_is_matched_whole_not_as_a_prefix(desk):
    assert refs(desk, "--tag", "printer") == ["IT-1"]
    assert refs(desk, "--tag", "print") == ["IT-2"]
    assert refs(desk, "--tag", "prin") == [] and refs(desk, "--tag", "PRINT") == []


@pytest.mark.parametrize("text", ['"sticky"', "mouse*", "-- desk", "NEAR(", "NEAR the desk", "floor:3",
                                  "(paper", 'paper"', "*", "-", "AND OR NOT", "^mouse", "'", "\\", "%", "_"])
def test_search_text_with_fts_syntax_never_fails(desk, text):
    code, out = invoke(desk, "items", "--all", "--search", text)
    assert code == 0, out
    assert "Traceback" not in out and "item(s) match" in out


def test_fts_syntax_is_read_as_words(desk):
    assert refs(desk, "--search", '"sticky"') == ["IT-3"]
    assert refs(desk, "--search", "NEAR the desk") == ["IT-3"]
    assert refs(desk, "--search", "(mouse") == ["IT-3"]
    assert refs(desk, "--search", "floor:3") == ["IT-1"]
    assert refs(desk, "--search", "* - :") == ["IT-1", "IT-2", "IT-3"]  # nothing to find: no word narrows it


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.server)])
def test_the_index_is_what_answers(tmp_path, request, database):
    """The query plan reads the full-text index: no mail is read one by one."""
    url = f"sqlite:///{tmp_path / 'inboxd.db'}" if database == "sqlite" else \
        request.getfixturevalue("postgres").create_database(f"inboxd_search_{next(_databases)}")
    open_database(url)
    assert search.engine() == ("fts5" if database == "sqlite" else "postgres")
    sql, params = search._items_with("printer", search.engine()).sql()
    if database == "sqlite":
        plan = str(db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall())
        assert f"SCAN {SEARCH_INDEX} VIRTUAL TABLE INDEX" in plan
    else:
        db.execute_sql("SET enable_seqscan = off")  # a few rows: the planner would rather read them all,
        db.execute_sql("DROP INDEX message_team_direction_message_id_fingerprint")  # or the incoming ones by this
        plan = str(db.execute_sql("EXPLAIN " + sql, params).fetchall())
        assert f"Bitmap Index Scan on {SEARCH_INDEX}" in plan


def test_without_the_index_like_finds_the_same(desk, monkeypatch):
    monkeypatch.setattr(search, "engine", lambda: "like")
    assert refs(desk, "--search", "kyocera PAPER") == ["IT-1"]
    assert refs(desk, "--search", "Intranet") == ["IT-2"]
    assert refs(desk, "--requester", "rosa@example.org", "--search", "mouse") == ["IT-3"]
    assert refs(desk, "--search", "100%") == [] and refs(desk, "--search", "*.log") == ["IT-3"]


def test_a_sqlite_without_fts5_searches_with_like(tmp_path, monkeypatch, caplog):
    from inboxd import models
    monkeypatch.setattr(models, "fts5_available", lambda database: False)  # as when migration 10 ran there
    daemon = Daemon(load_config(write_config(tmp_path)), clock=FixedClock(MONDAY_10), source=FakeSource(),
                    transport=FakeTransport())
    assert "this SQLite has no FTS5" in caplog.text
    Conversation(daemon, request=make_mail("rosa@example.org", "Printer jam", "The printer eats paper."))
    assert not db.table_exists(SEARCH_INDEX) and search.engine() == "like"
    assert refs(daemon, "--search", "eats paper") == ["IT-1"]
    assert refs(daemon, "--search", "toner") == []


def test_migration_10_indexes_the_mail_stored_before_it(tmp_path):
    daemon = Daemon(load_config(write_config(tmp_path)), clock=FixedClock(MONDAY_10), source=FakeSource(),
                    transport=FakeTransport())
    Conversation(daemon, request=make_mail("rosa@example.org", "Printer jam", "The printer eats paper."))
    for name in ("insert", "update", "delete"):  # the database as schema 9 left it
        db.execute_sql(f"DROP TRIGGER {SEARCH_INDEX}_{name}")
    db.execute_sql(f"DROP TABLE {SEARCH_INDEX}")
    db.execute_sql("DELETE FROM schemaversion WHERE version = 10")
    open_database(daemon.config.database_url)
    assert search.engine() == "fts5"
    assert refs(daemon, "--search", "eats") == ["IT-1"]


def test_the_index_follows_stored_mail_as_it_changes(desk):
    opening = Message.get((Message.item == 1) & (Message.direction == "in") & (Message.outcome == "item"))
    Message.update(body="The scanner hums.").where(Message.id == opening.id).execute()
    assert refs(desk, "--search", "hums") == ["IT-1"]
    Message.update(body="The scanner purrs.").where(Message.id == opening.id).execute()
    assert refs(desk, "--search", "hums") == [] and refs(desk, "--search", "purrs") == ["IT-1"]
    Message.delete().where(Message.id == opening.id).execute()
    assert refs(desk, "--search", "purrs") == []


def test_item_lists_the_requesters_other_items_newest_first(desk):
    code, out = invoke(desk, "item", "IT-1")
    assert code == 0
    assert "other items from rosa@example.org (newest first):\n  IT-3      done       Wed 25 Nov 2026  New mouse\n" \
        in out
    data = json.loads(invoke(desk, "item", "IT-3", "--json")[1])
    assert data["others"] == [{"ref": "IT-1", "status": data["others"][0]["status"],
                               "created_at": "2026-11-23T09:00:00+00:00", "subject": "Printer jam"}]
    code, out = invoke(desk, "item", "IT-2")
    assert "other items from ken@example.org: none" in out
    assert json.loads(invoke(desk, "item", "IT-2", "--json")[1])["others"] == []


def test_item_lists_ten_of_them(fake_daemon):
    fake_daemon.source.add([make_mail("omar@example.org", f"Question {n}", f"Question number {n}.")
                            for n in range(1, 14)])
    fake_daemon.ingest(fake_daemon.source.open())
    others = json.loads(invoke(fake_daemon, "item", "IT-5", "--json")[1])["others"]
    assert [o["ref"] for o in others] == [f"IT-{n}" for n in (13, 12, 11, 10, 9, 8, 7, 6, 4, 3)]
