"""Two teams in one configuration, two mailboxes, one database: each mail an item of its own team (issue 17).

Each team is a file of teams.d over the shared config.toml; each has its own Dovecot user. The same
flow runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import email
import email.policy
import json
import shutil
from datetime import timedelta
from email.message import EmailMessage as Mail
from pathlib import Path

from click.testing import CliRunner
from helpers import make_mail, write_config

from inboxd.cli import cli
from inboxd.clock import FixedClock
from inboxd.config import load_teams
from inboxd.daemon import Daemon
from inboxd.localconfig import SHIPPED
from inboxd.models import Event, Item, Message, Notice, Outbox
from inboxd.promises import promised_date
from inboxd.servers import append_messages
from inboxd.servers.imap import ImapServer

MONDAY_10 = __import__("conftest").MONDAY_10
IT_FILE = """\
[team]
name = "IT Help"
"""
HR_FILE = """\
[team]
name = "HR"
address = "hr@example.org"
ref_prefix = "HR"
members = [{{ email = "dana@example.org", name = "Dana" }}]

[queues]
default = ["dana@example.org"]
ops = ["dana@example.org"]
facilities = ["dana@example.org"]

[mailbox]
user = "hr"
port = {port}

[calendar]
timezone = "America/New_York"

[paths]
templates = "hr-templates"
"""
HR_ACK = "HR has your request and keeps it confidential"


class Teams:
    """IT (the shared config's team, Berlin) and HR (New York, its own templates), each on its mailbox."""

    def __init__(self, tmp_path: Path, url: str, it_box: ImapServer, hr_box: ImapServer, smtp) -> None:
        self.path = write_config(tmp_path, imap_port=it_box.port, smtp_port=smtp.port, imap_user=it_box.user)
        if url:
            self.path.write_text(self.path.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{url}"'))
        (tmp_path / "teams.d").mkdir()
        (tmp_path / "teams.d" / "it.toml").write_text(IT_FILE)
        (tmp_path / "teams.d" / "hr.toml").write_text(HR_FILE.format(port=hr_box.port))
        templates = tmp_path / "teams.d" / "hr-templates"
        shutil.copytree(SHIPPED / "templates", templates)
        ack = templates / "ack.txt"
        ack.write_text(ack.read_text().replace("thank you for writing to {{ team.name }}.", HR_ACK + "."))
        self.configs = {config.team.key: config for config in load_teams(self.path)}
        self.boxes, self.smtp, self.seen = {"IT": it_box, "HR": hr_box}, smtp, 0

    def once(self, key: str, *raws: bytes) -> list[Mail]:
        """Deliver mails to the team's mailbox, run its `once`; what it sent."""
        if raws:
            append_messages(self.boxes[key], list(raws))
        Daemon(self.configs[key], clock=FixedClock(MONDAY_10)).once()
        return self.sent()

    def sent(self) -> list[Mail]:
        new = [email.message_from_bytes(m.data, policy=email.policy.default) for m in self.smtp.messages[self.seen:]]
        self.seen = len(self.smtp.messages)
        return new

    def cli(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["--config", str(self.path), *args])
        return result.exit_code, result.output

    @staticmethod
    def items(key: str) -> list[Item]:
        return list(Item.select().where(Item.team == key).order_by(Item.id))


def text(mail: Mail) -> str:
    body = mail.get_body(("plain",))
    assert isinstance(body, Mail)
    return str(body.get_content())


def two_teams_scenario(teams: Teams) -> None:
    both = make_mail("Rosa <rosa@example.org>", "Need a new badge", "My badge stopped working.",
                     message_id="<badge@example.org>", to="help@example.org, hr@example.org")
    it_sent = teams.once("IT", both, make_mail("ken@example.org", "Laptop is slow", to="help@example.org"))
    hr_sent = teams.once("HR", both, make_mail("mia@example.org", "Holiday request", to="hr@example.org"))

    # Each mail an item of its team; the same mail to both aliases is a request to each.
    it_items, hr_items = teams.items("IT"), teams.items("HR")
    assert [i.subject for i in it_items] == ["Need a new badge", "Laptop is slow"]
    assert [i.subject for i in hr_items] == ["Need a new badge", "Holiday request"]
    assert Message.select().where(Message.message_id == "<badge@example.org>").count() == 2
    # Each acknowledgement has its team's prefix and template.
    it_acks = [m for m in it_sent if m["To"] in ("rosa@example.org", "ken@example.org")]
    hr_acks = [m for m in hr_sent if m["To"] in ("rosa@example.org", "mia@example.org")]
    assert {m["Subject"] for m in it_acks} == {f"[IT-{i.id}] We have your request: {i.subject}" for i in it_items}
    assert {m["Subject"] for m in hr_acks} == {f"[HR-{i.id}] We have your request: {i.subject}" for i in hr_items}
    assert all(HR_ACK in text(m) for m in hr_acks) and not any(HR_ACK in text(m) for m in it_acks)
    # Each date by its team's calendar: Berlin's working days and New York's differ.
    for key, item in (("IT", it_items[0]), ("HR", hr_items[0])):
        config = teams.configs[key]
        assert item.due_at == promised_date(config.calendar, config.service, MONDAY_10, None, None)
    assert it_items[0].due_at != hr_items[0].due_at
    # Only each team's members heard of its new items.
    assert {m["To"] for m in hr_sent} <= {"dana@example.org", "rosa@example.org", "mia@example.org"}
    assert "dana@example.org" not in {m["To"] for m in it_sent}

    # A reply naming IT's item (its number under HR's prefix, and IT's ack as In-Reply-To) is no reply of HR's.
    laptop = it_items[1]
    it_ack = next(m for m in it_acks if m["To"] == "ken@example.org")
    events = Event.select().where(Event.item == laptop.id).count()
    crossing = make_mail("ken@example.org", f"Re: [HR-{laptop.id}] Laptop is slow", "Any news?",
                         to="hr@example.org", headers={"In-Reply-To": it_ack["Message-ID"],
                                                       "References": it_ack["Message-ID"]})
    teams.once("HR", crossing)
    assert [i.subject for i in teams.items("HR")][-1] == "Re: Laptop is slow"  # a new HR request, its tag dropped
    assert len(teams.items("HR")) == 3 and len(teams.items("IT")) == 2
    assert Event.select().where(Event.item == laptop.id).count() == events

    # One team's sweep sends its own notices only, and its digest counts its own items.
    later = (MONDAY_10 + timedelta(days=8)).isoformat()
    code, out = teams.cli("migrate")  # health, once, sweep, check and run serve every team; migrate does not
    assert code == 1 and "several teams: pick one with --team HR|IT" in out
    code, out = teams.cli("sweep", "--team", "it", "--at", later)
    assert code == 0, out
    swept = teams.sent()
    assert swept and all("[HR-" not in m["Subject"] for m in swept)
    assert {n.item_id for n in Notice.select().where(Notice.item.is_null(False))} <= {i.id for i in it_items}
    assert not Outbox.select().where((Outbox.team == "HR") & (Outbox.status == "pending")).exists()
    digest = next(m for m in swept if m["To"] == "lead@example.org" and "digest" in m["Subject"].lower())
    assert "HR-" not in text(digest)
    code, out = teams.cli("sweep", "--team", "HR", "--at", later)
    assert code == 0, out
    hr_swept = teams.sent()
    assert hr_swept and all("[IT-" not in m["Subject"] for m in hr_swept)
    assert Notice.select().where((Notice.team == "HR") & (Notice.kind == "digest")).count() == \
        Notice.select().where((Notice.team == "IT") & (Notice.kind == "digest")).count() > 0  # a digest each

    # `items --team` and `stats --team` separate them; without --team, items and stats cover every team.
    code, out = teams.cli("items", "--all", "--team", "HR", "--json")
    assert code == 0, out
    assert [i["ref"] for i in json.loads(out)] == [f"HR-{i.id}" for i in teams.items("HR")]
    code, out = teams.cli("items", "--all", "--team", "it", "--json")
    assert [i["ref"] for i in json.loads(out)] == [f"IT-{i.id}" for i in it_items]
    code, out = teams.cli("items", "--all")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:2] == ["REF", "TEAM"]
    assert sorted(line.split()[0] for line in lines[1:6]) == sorted(
        [f"IT-{i.id}" for i in it_items] + [f"HR-{i.id}" for i in teams.items("HR")])
    for key, count in (("IT", 2), ("HR", 3)):
        code, out = teams.cli("stats", "--team", key, "--since", "2026-11-23", "--until", "2026-11-23", "--json")
        assert code == 0, out
        assert json.loads(out)["requests"] == count
    code, out = teams.cli("stats", "--since", "2026-11-23", "--until", "2026-11-23", "--json")
    assert {key: figures["requests"] for key, figures in json.loads(out).items()} == {"HR": 3, "IT": 2}
    # One item by its reference, whichever team it is; another team's number is not found under this one.
    code, out = teams.cli("item", f"HR-{hr_items[1].id}")
    assert code == 0 and "Holiday request" in out
    code, out = teams.cli("item", f"HR-{laptop.id}")
    assert code == 1 and "no item" in out


def test_two_teams_share_a_sqlite_database(tmp_path, mailbox, hr_mailbox, smtp_capture):
    two_teams_scenario(Teams(tmp_path, "", mailbox, hr_mailbox, smtp_capture))


def test_two_teams_share_a_postgresql_database(tmp_path, mailbox, hr_mailbox, smtp_capture, postgres):
    two_teams_scenario(Teams(tmp_path, postgres.create_database("inboxd_teams"), mailbox, hr_mailbox, smtp_capture))


def test_migration_12_on_a_postgresql_database_with_rows(postgres):
    from test_teams_db import migration_12_scenario
    migration_12_scenario(postgres.create_database("inboxd_v10"))
