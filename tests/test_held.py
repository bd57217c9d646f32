"""What already held against an attacker, kept under test: SQL through mail fields and command-line values."""

from __future__ import annotations

import json

from click.testing import CliRunner
from helpers import make_mail

from inboxd.cli import cli
from inboxd.models import Item, Message

SQL = "x'); DROP TABLE item; --"


def invoke(config_path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(config_path), *args])
    return result.exit_code, result.output


def test_sql_in_every_mail_field_is_only_text(fake_daemon):
    raw = make_mail(f'"{SQL}" <rosa@example.org>', f"Help {SQL}", f"Body {SQL}", message_id="<x'--@example.org>",
                    headers={"References": "<a'); DELETE FROM message; --@x>", "X-Priority": SQL})
    fake_daemon.source.add([raw])
    fake_daemon.ingest(fake_daemon.source.open())
    item = Item.get()
    assert item.subject == f"Help {SQL}" and Message.select().where(Message.direction == "in").count() == 1
    assert Message.get(Message.direction == "in").message_id == "<x'--@example.org>"


def test_sql_in_command_line_values_selects_nothing(fake_daemon):
    fake_daemon.source.add([make_mail("rosa@example.org", "Screen flickers")])
    fake_daemon.ingest(fake_daemon.source.open())
    path = fake_daemon.config.path
    for option in ("--queue", "--owner"):
        code, out = invoke(path, "items", "--all", "--json", option, "x' OR '1'='1")
        assert code == 0 and json.loads(out) == []  # not every item: the value is a value
    code, out = invoke(path, "item", "IT-1' OR '1'='1")
    assert code == 1 and "no item" in out
    assert Item.select().count() == 1
