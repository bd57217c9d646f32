"""`inboxd once --dry-run` shows what a run would do and changes nothing, on Dovecot and in the database;
`once` exits 1, and says so in its last line, when mail was parked or could not be delivered (issue 14)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from helpers import REPO, make_mail, write_config

from inboxd.servers import append_messages, free_port

INBOXD = [sys.executable, "-m", "inboxd.cli"]
# Renders for `check`'s sample (it has a file) but fails for a mail without one: that mail is parked.
PARKING_ACK = "{% if 'PARK' in item.subject %}{{ request.attachments[0].name }}{% endif %}\n"


def desk(tmp_path: Path, mailbox, smtp_port: int) -> Path:
    """A config with an attention folder, and an acknowledgement that parks any request saying PARK."""
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    (templates / "ack.txt").write_text((templates / "ack.txt").read_text() + PARKING_ACK)
    config = write_config(tmp_path / "desk", imap_port=mailbox.port, smtp_port=smtp_port, imap_user=mailbox.user,
                          imap_password=mailbox.password, templates=templates)
    config.write_text(config.read_text().replace('done_folder = "Processed"\n',
                                                 'done_folder = "Processed"\nattention_folder = "Needs attention"\n'))
    return config


def inboxd(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*INBOXD, "--config", str(config), *args], capture_output=True, text=True, timeout=120)


def server_state(mailbox) -> dict[str, list]:
    """Every folder with the UID and flags of each mail in it (but \\Recent)."""
    with mailbox.connect() as client:
        state = {}
        for _, _, folder in client.list_folders():
            client.select_folder(folder, readonly=True)
            flags = client.get_flags(client.search("ALL"))
            state[folder] = sorted((uid, sorted(set(f) - {b"\\Recent"})) for uid, f in flags.items())
        return state


def database_state(folder: Path) -> tuple[list[str], dict[str, str]]:
    """Every row of the SQLite database, and then every file beside it (the database's own, health, locks)."""
    with closing(sqlite3.connect(folder / "inboxd.db")) as db:
        rows = list(db.iterdump())
    return rows, {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_dry_run_shows_what_once_would_do_and_changes_nothing(tmp_path, mailbox, smtp_capture):
    config = desk(tmp_path, mailbox, smtp_capture.port)
    append_messages(mailbox, [make_mail("rosa@example.org", "Printer jammed", message_id="<rosa-1@example.org>")])
    assert inboxd(config, "once").returncode == 0  # IT-1, acknowledged, in Processed
    append_messages(mailbox, [
        make_mail("new@example.org", "Please help with thing 7", message_id="<new-1@example.org>"),
        make_mail("rosa@example.org", "Re: [IT-1] We have your request: Printer jammed", "Any news?"),
        make_mail("odd@example.org", "PARK this one", message_id="<park-1@example.org>")])
    server, database, sent = server_state(mailbox), database_state(config.parent), len(smtp_capture.messages)

    preview = inboxd(config, "once", "--dry-run")

    assert preview.returncode == 0, preview.stderr
    assert server_state(mailbox) == server  # no flag, no move
    assert database_state(config.parent) == database and len(smtp_capture.messages) == sent
    said = preview.stdout
    assert "3 new mail(s)" in said and "nothing was changed and nothing sent" in said
    assert "would create IT-2" in said and "would send ack to new@example.org: [IT-2] We have your request" in said
    assert all(f"would send new_request to {member}@example.org" in said for member in ("ana", "bo"))
    assert "on IT-1: reply: reply from rosa@example.org" in said
    assert said.count("would be moved to the folder 'Processed'") == 2
    assert "would be parked" in said and "would be moved to the folder 'Needs attention'" in said

    real = inboxd(config, "once")  # and the run itself does what the preview said
    assert real.returncode == 1
    assert real.stderr.rstrip().endswith("once: 3 new mail(s) processed (1 new item(s): IT-2); 1 parked "
                                         "(inboxd items --all lists them), 0 undelivered")
    acks = [m.rcpt_tos for m in smtp_capture.messages[sent:] if b"We have your request" in m.data]
    assert acks == [("new@example.org",)]


def test_a_dry_run_at_first_contact_says_a_run_would_stop_and_creates_no_database(tmp_path, mailbox, smtp_capture):
    config = desk(tmp_path, mailbox, smtp_capture.port)
    config.write_text(config.read_text().replace('first_contact = "all"', ""))
    append_messages(mailbox, [make_mail("old@example.org", "An old request")])
    server = server_state(mailbox)
    preview = inboxd(config, "once", "--dry-run")
    assert preview.returncode == 1 and "a run would stop here" in preview.stderr
    assert "already holds 1 mail(s)" in preview.stderr and "Traceback" not in preview.stderr
    assert server_state(mailbox) == server and list(server) == ["INBOX"]  # no folder created either
    assert not (config.parent / "inboxd.db").exists()


def test_once_exits_1_when_mail_could_not_be_delivered(tmp_path, mailbox):
    config = desk(tmp_path, mailbox, free_port())  # no SMTP server there
    append_messages(mailbox, [make_mail("rosa@example.org", "Printer jammed")])
    result = inboxd(config, "once")
    assert result.returncode == 1
    # The acknowledgement and the mail to the owner a rule assigned wait in the outbox.
    assert result.stderr.rstrip().endswith("once: 1 new mail(s) processed (1 new item(s): IT-1); 0 parked, "
                                           "2 undelivered (the log above says why; what can be retried stays "
                                           "in the outbox)")


def test_a_dry_run_on_a_fake_folder_leaves_the_sqlite_file_and_the_folder_as_they_were(config, clock):
    from inboxd.daemon import Daemon
    from inboxd.outbox import FakeTransport
    from inboxd.preview import preview_once
    from inboxd.source import FakeSource
    daemon = Daemon(config, clock=clock, source=FakeSource(), transport=FakeTransport())
    daemon.source.add([make_mail("rosa@example.org", "Printer jammed")])
    daemon.once()
    daemon.source.add([make_mail("ken@example.org", "Please help with thing 7")])
    def state() -> tuple[list[str], dict[str, str]]:
        """The rows, and the files but SQLite's own (the test's open connection may checkpoint them any time)."""
        rows, files = database_state(config.path.parent)
        return rows, {name: digest for name, digest in files.items()
                      if name not in ("inboxd.db", "inboxd.db-wal", "inboxd.db-shm")}

    database = state()
    report = preview_once(config, clock, daemon.source)
    assert "would create IT-2" in report and "would send ack to ken@example.org" in report
    assert state() == database
    assert daemon.source.done == [1] and 2 in daemon.source.mails  # not marked done
