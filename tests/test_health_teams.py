"""`inboxd health` without --team: every team of a teams.d deployment; on PostgreSQL, what the leases say."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime

from click.testing import CliRunner
from test_workers import teams_config

from inboxd import health
from inboxd.cli import cli
from inboxd.config import load_teams
from inboxd.leases import RowLeases
from inboxd.mailout import OutgoingMail
from inboxd.models import db, open_database, use_team, write_transaction
from inboxd.outbox import enqueue
from inboxd.workers import lease_name


def ask(config, *args: str):
    return CliRunner().invoke(cli, ["--config", str(config), "health", *args])


def test_health_says_every_team_and_exits_1_for_any_not_ok(tmp_path):
    path = teams_config(tmp_path / "d", count=2)
    assert CliRunner().invoke(cli, ["--config", str(path), "migrate", "--team", "T1"]).exit_code == 0
    t1, t2 = load_teams(path, secrets=False)
    health.Health(health.status_file(t1)).imap_seen()
    result = ask(path)
    assert result.exit_code == 1 and result.output.startswith("not healthy: T2\n"), result.output
    assert "  T1: ok since" in result.output and "  T2: unknown: no readable status" in result.output
    health.Health(health.status_file(t2)).imap_seen()
    result = ask(path, "--json")
    answer = json.loads(result.output)
    assert result.exit_code == 0 and answer["summary"] == "ok: all 2 teams" and set(answer["teams"]) == {"T1", "T2"}
    assert ask(path, "--team", "T2").output.startswith("ok since")  # one team: the one-team answer, as before


def test_on_postgresql_a_team_another_machines_worker_holds_is_watched_one_none_holds_is_not(tmp_path, postgres):
    path = teams_config(tmp_path / "d", count=3, url=postgres.create_database("inboxd_health_teams"))
    assert CliRunner().invoke(cli, ["--config", str(path), "migrate", "--team", "T1"]).exit_code == 0
    t1, t2, t3 = load_teams(path, secrets=False)
    url = t1.database_url
    elsewhere = RowLeases(url, holder="elsewhere:4242:abcdef")
    here = RowLeases(url, holder=f"{socket.gethostname()}:{os.getpid()}:abcdef")
    try:
        assert elsewhere.take([lease_name(t1)], most=1) and here.take([lease_name(t2)], most=1)
        health.Health(health.status_file(t2)).pause("IMAP: cannot connect")  # this machine's worker holds T2: red
        answer = json.loads(ask(path, "--json").output)["teams"]
        assert answer["T1"]["healthy"] and "watched by worker elsewhere:4242:abcdef" in answer["T1"]["summary"]
        assert not answer["T2"]["healthy"] and answer["T2"]["summary"].startswith("paused since")
        assert not answer["T3"]["healthy"] and "no live worker holds its mailbox" in answer["T3"]["summary"]
        health.Health(health.status_file(t2)).imap_seen()
        assert ask(path).output.startswith("not healthy: T3\n")
    finally:
        elsewhere.close(), here.close()



def test_mail_of_a_team_no_longer_in_the_config_is_told_not_left_unsent_silently(tmp_path, postgres):
    """A team file removed with mail still pending: no worker claims its rows (they go with their team's SMTP)."""
    path = teams_config(tmp_path / "d", count=2, url=postgres.create_database("inboxd_health_strays"))
    assert CliRunner().invoke(cli, ["--config", str(path), "migrate", "--team", "T1"]).exit_code == 0
    teams = load_teams(path, secrets=False)
    for config in teams:
        health.Health(health.status_file(config)).imap_seen()
    elsewhere = RowLeases(teams[0].database_url, holder="elsewhere:1:abcdef")
    try:
        assert elsewhere.take([lease_name(c) for c in teams], most=2)
        assert ask(path).exit_code == 0
        open_database(teams[0].database_url)
        use_team("T9")  # a team whose file was removed, its acknowledgements still pending
        with write_transaction():
            for n in range(3):
                enqueue(OutgoingMail("ack", "t9@example.org", ("p@example.org",), "s", f"<{n}@x>", b"x"), None,
                        datetime.now(UTC))
        db.close()
        result = ask(path)
        assert result.exit_code == 1 and "3 mail(s) of team(s) not in the configuration: T9 (3)" in result.output
        assert "3 mail(s) of team(s) not in the configuration" in ask(path, "--team", "T1").output
        assert json.loads(ask(path, "--json").output)["database"]["strays"] == {"T9": 3}
    finally:
        elsewhere.close()
