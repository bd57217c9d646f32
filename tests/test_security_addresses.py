"""Issue 12 end to end: forged and tricky From lines on a real IMAP server (Dovecot) and a real SMTP capture.

The forged replies go to the member's secret reply address for the item and `require_secret = false` is
set, so no proof of receipt is missing: only the reading of the From can refuse them.
"""

from __future__ import annotations

import email
import sqlite3
from email.message import Message
from pathlib import Path
from types import SimpleNamespace

import pytest
from conversation_helpers import reply, text_of
from helpers import make_mail, write_config
from test_addresses import ENCODED_TRICKS as UNIT_TRICKS

from inboxd import threads
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.message import decode
from inboxd.servers import append_messages

PROOF_NOT_ASKED = "[commands]\nrequire_secret = false\n"
MEMBER = "bo@example.org"
# From lines that a lenient reader took for bo, or that hide another address in a name.
FORGED_FROMS = [
    "bo@example.org <evil@evil.test>",
    "bo@example.org)<evil@evil.test>",
    '"bo@example.org" <evil@evil.test>',
    "=?utf-8?b?Ym9AZXhhbXBsZS5vcmc=?= <evil@evil.test>",
    "bo@example.org, evil@evil.test",
    "=?utf-8?q?x<_x@evil.test?= <bo@example.org>",
    "=?utf-8?q?x=0D=0ABcc:_evil@evil.test?= <bo@example.org>",
]
# RFC 2047 display names hiding ':', '<', ',', '"' or CR/LF in front of the requester's address.
ENCODED_TRICKS = [value for value in UNIT_TRICKS if value.endswith("<real@example.org>")]


class Desk:
    """inboxd in this process on the real servers: the real ImapSource and SmtpTransport."""

    def __init__(self, tmp_path: Path, mailbox, smtp) -> None:
        self.config_path = write_config(tmp_path, imap_port=mailbox.port, smtp_port=smtp.port,
                                        imap_user=mailbox.user, imap_password=mailbox.password,
                                        extra=PROOF_NOT_ASKED)
        self.config = load_config(self.config_path)
        assert self.config.commands.require_secret is False
        self.mailbox, self.smtp, self.seen = mailbox, smtp, 0

    def deliver(self, *raws: bytes) -> list:
        """Put mails into the INBOX, let inboxd read them once, return what it sent meanwhile."""
        append_messages(self.mailbox, raws)
        assert Daemon(self.config).once() == len(raws)
        new = self.smtp.messages[self.seen:]
        self.seen = len(self.smtp.messages)
        return new

    def query(self, sql: str, *args: object) -> list[tuple]:
        with sqlite3.connect(self.config_path.parent / "inboxd.db") as db:
            return db.execute(sql, args).fetchall()

    def secret_address(self, item_id: int, team_mail: Message) -> str:
        """The member's own reply address for the item: what Reply-To carries when proof is asked for."""
        ((secret,),) = self.query("select secret from item where id = ?", item_id)
        item = SimpleNamespace(id=item_id, secret=secret)
        address = threads.secret_address(self.config.team, item, MEMBER)
        assert secret and team_mail["Reply-To"] in (address, self.config.team.address)

        class Lookup:  # the stored item, as far as threading needs it
            def item(self, number: int) -> SimpleNamespace | None:
                return item if number == item_id else None

            def kind_of_mail(self, message_id: str) -> str | None:
                return None  # which mail it answers does not matter to the proof

        # The member's genuine reply to it would be proven: proof is satisfied, only the From can differ.
        genuine = decode(reply(team_mail, MEMBER, "#note x", recipient=address))
        assert threads.find_thread(genuine, self.config.team, Lookup()).secret_ok
        return address


def parsed(captured) -> Message:
    return email.message_from_bytes(captured.data)


def forged(mail: bytes, value: str) -> bytes:
    """A mail with its From line replaced by `value`, byte for byte."""
    head, _, body = mail.partition(b"\n\n")
    lines = [f"From: {value}".encode() if line.startswith(b"From:") else line for line in head.split(b"\n")]
    return b"\n".join(lines) + b"\n\n" + body


def recipients(sent: list) -> list[str]:
    return [address for captured in sent for address in captured.rcpt_tos]


@pytest.mark.parametrize("keywords", ["#done Fixed it.", "#redirect evil@evil.test please take this"])
def test_a_forged_member_from_changes_nothing_and_mails_no_one_but_the_member(tmp_path, mailbox, smtp_capture,
                                                                             keywords):
    desk = Desk(tmp_path, mailbox, smtp_capture)
    sent = desk.deliver(make_mail("Rosa Lind <rosa@example.org>", "Monitor flickers", "It flickers.",
                                  message_id="<rosa-1@example.org>"))
    announcement = next(parsed(m) for m in sent if MEMBER in m.rcpt_tos)
    to_item = desk.secret_address(1, announcement)
    for number, value in enumerate(FORGED_FROMS, start=1):
        mail = forged(reply(announcement, MEMBER, keywords, recipient=to_item), value)
        assert b"[IT-1]" in mail and to_item.encode() in mail
        sent = desk.deliver(mail)
        assert "evil@evil.test" not in recipients(sent), value
        assert "rosa@example.org" not in recipients(sent), value  # nothing relayed to the requester
        assert recipients(sent).count(MEMBER) <= 1, value
        assert desk.query("select status, owner from item") == [("new", None)], value
        refused = desk.query("select detail from event where kind = 'refused' order by id")
        assert len(refused) == number and keywords.split()[0] in refused[-1][0], value
    assert desk.query("select count(*) from item") == [(1,)]
    # The very same mail with bo's own From line is obeyed: only the From made the difference.
    sent = desk.deliver(reply(announcement, MEMBER, keywords, recipient=to_item))
    assert desk.query("select status from item") in ([("done",)], [("redirected",)])
    assert "rosa@example.org" in recipients(sent)


def test_encoded_name_tricks_are_tracked_but_answered_to_no_one(tmp_path, mailbox, smtp_capture):
    desk = Desk(tmp_path, mailbox, smtp_capture)
    tricks = [forged(make_mail("real@example.org", f"Trick {i}", message_id=f"<trick-{i}@example.org>"), value)
              for i, value in enumerate(ENCODED_TRICKS)]
    clean = make_mail("=?utf-8?q?J=C3=BCrgen?= <real@example.org>", "Clean", message_id="<clean@example.org>")
    sent = desk.deliver(*tricks, clean)
    assert desk.query("select count(*) from item") == [(len(ENCODED_TRICKS) + 1,)]  # nothing lost
    assert desk.query("select count(*) from item where requester = '' and acknowledged_at is null") == \
        [(len(ENCODED_TRICKS),)]
    assert set(recipients(sent)) <= {"real@example.org", "ana@example.org", "bo@example.org"}
    acks = [parsed(m) for m in sent if m.rcpt_tos == ("real@example.org",)]
    assert len(acks) == 1 and "Clean" in acks[0]["Subject"]  # only the clean From is acknowledged
    assert "real@example.org" in acks[0]["To"]


def test_a_100000_address_cc_through_the_real_server(tmp_path, mailbox, smtp_capture):
    desk = Desk(tmp_path, mailbox, smtp_capture)
    cc = ", ".join(f"User {i} <user{i}@example.org>" for i in range(100_000))
    mail = make_mail("rosa@example.org", "Big Cc").replace(b"\nSubject:", f"\nCc: {cc}\nSubject:".encode(), 1)
    sent = desk.deliver(mail)
    assert desk.query("select requester from item") == [("rosa@example.org",)]
    assert "rosa@example.org" in recipients(sent) and not any(r.startswith("user") for r in recipients(sent))


# --- [commands] authserv_id: only our topmost header counts ------------------------------------

OURS = "mx.example.org"
FORGED_PASS = f"Authentication-Results: {OURS}; dkim=pass header.d=example.org; dmarc=pass header.from=example.org"
UNREADABLE = [  # our server's header, made unreadable by what the sender chose (HELO, MAIL FROM)
    f"{OURS}; iprev=pass policy.iprev=192.0.2.7 smtp.helo=[192.0.2.7]; dmarc=fail header.from=example.org",
    f"{OURS}; spf=fail smtp.mailfrom=x;y@evil.test; dmarc=fail header.from=example.org",
    f"{OURS}; spf=fail smtp.mailfrom=jö@evil.test; dmarc=fail header.from=example.org",
    f"{OURS}; spf=pass smtp.mailfrom==?utf-8?q?x=3B_dmarc=3Dpass_header.from=3Dexample.org=3B_x=3Dy_smtp.x=3D?="
    f"@evil.test; dmarc=fail header.from=example.org",
]


def received(mail: bytes, *lines: str) -> bytes:
    """The mail as our server hands it on: its header lines on top, the sender's own below them."""
    return "".join(f"{line}\n" for line in lines).encode() + mail


def test_an_unreadable_authentication_results_of_ours_fails_closed(tmp_path, mailbox, smtp_capture):
    desk = Desk(tmp_path, mailbox, smtp_capture)
    desk.config = load_config(write_config(tmp_path, imap_port=mailbox.port, smtp_port=smtp_capture.port,
                                           imap_user=mailbox.user, imap_password=mailbox.password,
                                           extra=PROOF_NOT_ASKED + f'authserv_id = "{OURS}"\n'))
    sent = desk.deliver(make_mail("rosa@example.org", "Monitor flickers", message_id="<rosa-2@example.org>"))
    announcement = next(parsed(m) for m in sent if MEMBER in m.rcpt_tos)
    to_item = desk.secret_address(1, announcement)
    for value in UNREADABLE:
        mail = received(reply(announcement, MEMBER, "#done Fixed it.", recipient=to_item),
                        f"Authentication-Results: {value}")
        sent = desk.deliver(mail.replace(b"\nSubject:", f"\n{FORGED_PASS}\nSubject:".encode(), 1))
        assert recipients(sent) == [MEMBER], value  # the member is told it was refused; no one else hears
        told = " ".join(text_of(parsed(sent[0])).split())
        assert f"{OURS} did not report a DMARC or DKIM pass for example.org" in told
        assert desk.query("select status from item") == [("new",)], value
    readable = f"Authentication-Results: {OURS}; dmarc=pass header.from=example.org"
    desk.deliver(received(reply(announcement, MEMBER, "#done Fixed it.", recipient=to_item), readable))
    assert desk.query("select status from item") == [("done",)]


# --- the password written where a name belongs ----------------------------------------------------

def test_a_password_as_password_env_or_file_is_never_echoed(tmp_path, mailbox, smtp_capture, monkeypatch):
    import subprocess
    import sys
    password = "Imap-S3cret-4242!"
    desk = Desk(tmp_path, mailbox, smtp_capture)
    good = desk.config_path.read_text()
    desk.config_path.write_text(good.replace('password_file = "imap-password"', f'password_env = "{password}"')
                                .replace("[smtp]\n", f'[smtp]\nuser = "help"\npassword_file = "{password}"\n'))
    monkeypatch.delenv(password, raising=False)
    everything = ""
    for command in ("check", "once", "run"):
        result = subprocess.run([sys.executable, "-m", "inboxd.cli", "--config", str(desk.config_path), command],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        everything += result.stdout + result.stderr
    assert "[mailbox] password_env: names no environment variable that is set" in everything
    assert "[smtp] password_file: names no file that can be read" in everything
    assert password not in everything and "S3cret" not in everything
    desk.config_path.write_text(good)  # the admin follows the advice: a name, a path
    append_messages(mailbox, [make_mail("rosa@example.org", "Works again")])
    fixed = subprocess.run([sys.executable, "-m", "inboxd.cli", "--config", str(desk.config_path), "once"],
                           capture_output=True, text=True, timeout=60)
    assert fixed.returncode == 0, fixed.stderr
