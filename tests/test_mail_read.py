"""Text that is not text (issue "never loop, never stall, never drop", item 8): never pasted into mail.

An Outlook .msg sent as the body (OLE2 data, full of NULs) is a file, not text: the team's mail and
the item show a note and list the file. Unit tests on `decode`, then the pipeline on Dovecot.
"""

from __future__ import annotations

import base64
import re
from email.message import Message as EmailMessage

import pytest
from inboxd.message import UNREADABLE_TEXT, decode, is_text
from inboxd.models import Message

from conversation_helpers import text_of
from helpers import CORPUS
from test_security import Mailroom

# The start of a real Outlook .msg: the OLE2 signature, then sectors of NULs and 0xFF.
OLE = (CORPUS / "malformed" / "mailparser__mail_outlook_1.eml").read_bytes()[:6000]
HEAD = (b"From: Rosa Lind <rosa@example.org>\r\nTo: help@example.org\r\nSubject: Printer log\r\n"
        b"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n")
JUNK = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")  # what binary read as text turns into


def mail(n: int, content: bytes) -> bytes:
    return HEAD + f"Message-ID: <msg-{n}@example.org>\r\n".encode() + content


TEXT_PLAIN = mail(1, b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + OLE)
NO_TYPE = mail(2, b"\r\n" + OLE)  # no Content-Type: text/plain by default
OUTLOOK = mail(3, b"Content-Type: application/vnd.ms-outlook\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               + base64.encodebytes(OLE))
WITH_TEXT = mail(4, b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
                 b"The printer log is attached.\r\n--b\r\nContent-Type: text/plain\r\n\r\n" + OLE + b"\r\n--b--\r\n")


@pytest.mark.parametrize("raw", [TEXT_PLAIN, NO_TYPE], ids=["text/plain", "no type"])
def test_binary_declared_as_text_is_a_file_and_a_note(raw):
    msg = decode(raw)
    assert msg.text == UNREADABLE_TEXT
    assert [(a.name, a.size) for a in msg.attachments] == [("unnamed application/octet-stream", len(OLE))]
    assert msg.files[0].get_payload(decode=True) == OLE  # the bytes kept, as a base64 file


def test_a_body_of_another_type_is_listed_as_a_file():
    msg = decode(OUTLOOK)
    assert msg.text == ""  # nothing claimed to be text
    assert [(a.name, a.size) for a in msg.attachments] == [("unnamed application/vnd.ms-outlook", len(OLE))]
    assert "From" not in msg.files[0] and msg.files[0].get_filename() == "unnamed.bin"  # not the whole mail


def test_the_text_beside_a_binary_part_is_kept_and_the_binary_part_is_a_file():
    msg = decode(WITH_TEXT)
    assert msg.text == "The printer log is attached."
    assert [a.name for a in msg.attachments] == ["unnamed application/octet-stream"]


def test_stray_control_characters_in_real_text_are_left_out():
    msg = decode(mail(5, b"Content-Type: text/plain\r\n\r\nThe screen\x00 flickers\x07 since\x1b Monday.\r\n"))
    assert msg.text == "The screen flickers since Monday." and msg.attachments == ()


def test_what_counts_as_text():
    assert is_text("Grüße aus München, Привет, こんにちは\n\tTabs and lines")
    assert is_text("Ein kaputtes Zeichen: \ufffd, mehr nicht")  # one misread byte is still text
    assert not is_text(OLE.decode("utf-8", "replace"))
    assert not is_text(OLE.replace(b"\0", b"\x80").decode("latin-1"))  # as Dovecot stores it: NUL -> 0x80
    assert not is_text("Hello".encode("utf-16-le").decode("latin-1"))


def test_the_real_outlook_file_sent_as_a_mail_becomes_a_note(tmp_path):
    msg = decode((CORPUS / "malformed" / "mailparser__mail_outlook_1.eml").read_bytes())
    assert msg.text == UNREADABLE_TEXT and not JUNK.search(msg.summary)


# --- end to end, on Dovecot and aiosmtpd ---------------------------------------------------------

def clean(mail: EmailMessage) -> str:
    """The team's mail as text, after checking its bytes hold no NUL."""
    assert b"\x00" not in mail.as_bytes()
    text = text_of(mail)
    assert not JUNK.search(text)
    return text


def test_the_team_gets_a_note_and_the_file_listed_never_binary_junk(tmp_path, mailbox, smtp_capture):
    room = Mailroom(tmp_path, mailbox, smtp_capture)
    sent = room.run(TEXT_PLAIN, OUTLOOK, WITH_TEXT)
    team = [m for m in sent if m["To"] != "rosa@example.org"]
    assert team and len([m for m in sent if m["To"] == "rosa@example.org"]) == 3  # each request acknowledged
    texts = [clean(m) for m in team]
    assert any(UNREADABLE_TEXT in t and "unnamed application/octet-stream (5.9 kB)" in t for t in texts)
    assert any("unnamed application/vnd.ms-outlook (5.9 kB)" in t for t in texts)
    assert any("The printer log is attached." in t for t in texts)
    bodies = [m.body for m in Message.select().where(Message.direction == "in")]
    assert len(bodies) == 3 and not any(JUNK.search(b) for b in bodies)  # what `inboxd item` shows


def test_the_outlook_file_itself_appended_as_a_mail(tmp_path, mailbox, smtp_capture):
    room = Mailroom(tmp_path, mailbox, smtp_capture)
    sent = room.run((CORPUS / "malformed" / "mailparser__mail_outlook_1.eml").read_bytes())
    assert sent and all(UNREADABLE_TEXT in clean(m) for m in sent)  # no sender: the team is told, no one else
    assert Message.get(Message.direction == "in").body == UNREADABLE_TEXT
