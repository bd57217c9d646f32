"""The command line contract: check, rules test, items, item, and clean errors."""

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from helpers import REPO, make_mail, write_config

from inboxd.cli import cli


def invoke(config_path, *args):
    result = CliRunner().invoke(cli, ["--config", str(config_path), *args])
    return result.exit_code, result.output


def test_check_passes_on_shipped_files(tmp_path):
    code, out = invoke(write_config(tmp_path), "check")
    assert code == 0, out
    assert "8 rule(s) in 3 file(s)" in out and "23 template(s)" in out


def test_check_reports_unknown_key_bad_regex_unknown_template_and_duplicate(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    (rules / "50-broken.toml").write_text('''version = 1

[[rule]]
name = "printer"
match.subject = { contains = "ink" }
queue = "facilities"

[[rule]]
name = "typo"
match.subject = { regex = "(unclosed" }
queue = "ops"
priorty = "high"

[[rule]]
name = "no-template"
match.subject = { contains = "x" }
acknowledge = "ack_fancy"
queue = "ops"
''')
    result = subprocess.run([sys.executable, "-m", "inboxd.cli", "--config", str(write_config(tmp_path, rules=rules)),
                             "check"], capture_output=True, text=True)
    assert result.returncode == 1
    broken = rules / "50-broken.toml"
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ")
    assert f"{broken}:4: printer: name: duplicate rule name 'printer', first defined at {rules / '20-queues.toml'}:3" in result.stderr
    assert f"{broken}:10: typo: match.subject.regex: bad regular expression" in result.stderr
    assert f"{broken}:12: typo: priorty: unknown key (did you mean 'priority'?)" in result.stderr
    assert f"{broken}:17: no-template: acknowledge: unknown template 'ack_fancy'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("reach", ["{{ item.__class__.__mro__ }}", "{{ request.text.__class__.__base__ }}",
                                   "{{ cycler.__init__.__globals__ }}"])
def test_check_fails_a_template_that_reaches_for_python_internals(tmp_path, reach):
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    (templates / "relay.txt").write_text(f"Subject: hi\n\nhello\n{reach}\n")
    code, out = invoke(write_config(tmp_path, templates=templates), "check")
    assert code == 1 and f"{templates / 'relay.txt'}:4: not allowed in a template" in out


def test_rules_test_explains_without_database_or_network(tmp_path):
    config = write_config(tmp_path, imap_port=9, smtp_port=9)  # nothing listens there
    mail = tmp_path / "mail.eml"
    mail.write_bytes(make_mail("rosa@example.org", "Printer on floor 2 out of toner"))
    code, out = invoke(config, "rules", "test", str(mail))
    assert code == 0, out
    assert "no    vip-outage" in out and "from domain 'board.example.org': no" in out
    assert "MATCH printer" in out and "subject contains any of 'printer', 'toner', 'paper jam': yes" in out
    assert "disposition: queue facilities, priority normal, assign round-robin" in out
    assert "Subject: [IT-NEW] We have your request: Printer on floor 2 out of toner" in out
    assert "To: rosa@example.org" in out
    assert not (tmp_path / "inboxd.db").exists()


def test_rules_test_on_an_auto_reply_says_it_is_skipped(tmp_path):
    mail = tmp_path / "ooo.eml"
    mail.write_bytes(make_mail(subject="Away", headers={"Auto-Submitted": "auto-replied"}))
    code, out = invoke(write_config(tmp_path), "rules", "test", str(mail))
    assert code == 0 and "SKIPPED by auto-submitted" in out and "mail that would be sent" not in out


def test_rules_test_on_a_reply_names_the_thread_and_the_new_text(tmp_path):
    mail = tmp_path / "reply.eml"
    mail.write_bytes(make_mail("ana@example.org", "AW: [IT-7] Printer", "#take\n\nOn Mon, 23 Nov 2026, "
                               "IT Help <help@example.org> wrote:\n> #done\n"))
    code, out = invoke(write_config(tmp_path), "rules", "test", str(mail))
    assert code == 0 and "thread:      its subject names IT-7" in out
    assert "new text:    #take\n" in out  # the quoted #done is not part of it


def test_items_json_and_item_history(tmp_path):
    from inboxd.config import load_config
    from inboxd.daemon import Daemon
    from inboxd.outbox import FakeTransport
    from inboxd.source import FakeSource
    config_path = write_config(tmp_path)
    daemon = Daemon(load_config(config_path), source=FakeSource(), transport=FakeTransport())
    daemon.source.add([make_mail("rosa@example.org", "Printer jam"), make_mail("omar@example.org", "New mouse")])
    daemon.ingest(daemon.source.open())
    daemon.sender.drain()
    code, out = invoke(config_path, "items", "--json")
    assert code == 0
    items = json.loads(out)
    assert [i["ref"] for i in items] == ["IT-1", "IT-2"]
    assert set(items[0]) >= {"ref", "subject", "requester", "owner", "queue", "status", "priority", "tags",
                             "created_at", "due_at", "acknowledged_at", "first_response_at",
                             "resolved_at", "satisfaction"}
    assert items[0]["queue"] == "facilities" and items[0]["owner"] == "ana@example.org"
    assert items[0]["due_at"].endswith("+00:00") and items[0]["first_response_at"] is None
    code, out = invoke(config_path, "items", "--queue", "default")
    assert code == 0 and "IT-2" in out and "IT-1" not in out
    code, out = invoke(config_path, "item", "IT-1")
    assert code == 0
    assert "created" in out and "assigned to ana@example.org (round-robin)" in out
    assert "-> to rosa@example.org  [ack, sent]\n  Subject: [IT-1] We have your request" in out
    code, out = invoke(config_path, "item", "IT-99")
    assert code == 1 and "no item 'IT-99'" in out


def test_missing_config_is_a_clean_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "inboxd.cli", "--config", str(tmp_path / "nope.toml"), "items"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "config file not found" in result.stderr and "Traceback" not in result.stderr


def test_usage_error_exits_2():
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2 and "No such command" in result.output


def test_item_shows_the_whole_conversation_and_who_did_what(fake_daemon):
    from conversation_helpers import Conversation
    talk = Conversation(fake_daemon)
    talk.owner_says("#take\nHi Rosa, which model is it?")
    talk.requester_says("A Dell U2720Q.")
    talk.owner_says("#note asked the vendor")
    code, out = invoke(fake_daemon.config.path, "item", "IT-1")
    assert code == 0
    assert "ana@example.org          command          #take: assigned to ana@example.org" in out
    assert "ana@example.org          note             asked the vendor" in out
    assert "<- from rosa@example.org  [item, received]\n  Subject: Screen flickers\n  | My screen flickers" in out
    assert "-> to rosa@example.org  [relay, sent]" in out and "  | Hi Rosa, which model is it?" in out
    assert "<- from rosa@example.org  [reply, received]" in out and "  | A Dell U2720Q." in out
    code, out = invoke(fake_daemon.config.path, "item", "IT-1", "--json")
    mail = json.loads(out)["mail"]
    assert [m["kind"] for m in mail][:4] == ["item", "ack", "new_request", "new_request"]  # the requester first; one per member
    assert mail[0]["text"] == "My screen flickers since Monday."


def test_item_shows_the_promise_it_is_under(fake_daemon):
    from conversation_helpers import Conversation
    talk = Conversation(fake_daemon)
    talk.owner_says("#take\n#ontrack")
    talk.owner_says("#waiting")
    code, out = invoke(fake_daemon.config.path, "item", "IT-1")
    assert code == 0
    assert "on_track:           yes (#ontrack" in out and "paused_at:          Mon 23 Nov 2026 10:00 CET" in out
    data = json.loads(invoke(fake_daemon.config.path, "item", "IT-1", "--json")[1])
    assert data["on_track"] is True and data["paused_at"] == "2026-11-23T09:00:00+00:00"
    assert data["requested_due_at"] is None and data["last_told_at"] is not None


@pytest.mark.parametrize("args", [["item", "IT-²"], ["item", "IT-" + "9" * 5000], ["item", "[IT-x]"]])
def test_odd_references_are_one_line_errors(tmp_path, args):
    config = write_config(tmp_path)
    assert invoke(config, "migrate")[0] == 0  # `item` never creates the database
    code, out = invoke(config, *args)
    assert code == 1 and out.startswith("error: no item") and "Traceback" not in out and len(out) < 200


def test_a_moment_past_the_calendar_is_a_usage_error(tmp_path):
    code, out = invoke(write_config(tmp_path), "sweep", "--at", "9999-12-31T23:59", "--dry-run")
    assert code == 2 and "outside the years 1970 to 9000" in out and "Traceback" not in out


def test_a_database_that_cannot_be_opened_is_one_line(tmp_path):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('url = "sqlite:///', 'url = "sqlite:////nonexistent/dir/'))
    for args in (["items"], ["item", "IT-1"], ["sweep", "--dry-run"]):
        code, out = invoke(config, *args)
        assert code == 1 and out.startswith("error: database sqlite:////nonexistent/dir/") and "Traceback" not in out
