"""Duplicates over the whole content: a reused Message-ID with any other byte of text or file is another mail;
the same mail twice is one item, and the second copy is logged and noted, never dropped silently (issue 13, 6)."""

from __future__ import annotations

import logging
from email.message import EmailMessage

import pytest
from helpers import make_mail
from test_e2e import folder_counts
from test_security import Mailroom

from inboxd.message import decode
from inboxd.models import Event, Item, Message
from inboxd.pipeline import Pipeline

ROSA = "rosa@example.org"


def scan(body: str = "Scanned on floor 3.", file: bytes = b"%PDF-1.4 page one", message_id: str = "<scan@x.org>"
         ) -> bytes:
    """A scanner's mail: the same Message-ID, sender, subject and Date every time."""
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = ROSA, "help@example.org", "Scan from MFP-3"
    mail["Date"], mail["Message-ID"] = "Mon, 23 Nov 2026 10:00:00 +0100", message_id
    mail.set_content(body)
    mail.add_attachment(file, maintype="application", subtype="pdf", filename="scan.pdf")
    return mail.as_bytes()


def delivered(raw: bytes, hop: str, to: str = "help@example.org") -> bytes:
    """One delivery of a mail: the receiving server's own headers on top, as for To and Cc both the alias."""
    return (f"Received: from mx{hop}.example.org by imap.example.org; Mon, 23 Nov 2026 10:00:0{hop} +0100\n"
            f"Delivered-To: {to}\nX-Original-To: {to}\n").encode() + raw


# --- the fingerprint ----------------------------------------------------------------------------

def test_a_difference_only_in_non_ascii_text_or_in_a_file_is_another_mail():
    first = decode(scan("Bitte Raum Ä prüfen."))
    assert decode(scan("Bitte Raum Ö prüfen.")).fingerprint != first.fingerprint
    assert decode(scan("Bitte Raum Ä prüfen.", file=b"%PDF-1.4 page two")).fingerprint != first.fingerprint
    # the old fingerprint (text, ASCII only) could not tell them apart
    assert decode(scan("Bitte Raum Ö prüfen.")).old_fingerprint == first.old_fingerprint


def test_two_deliveries_of_one_mail_share_the_fingerprint_whatever_the_server_rewrote():
    raw = scan(file=b"%PDF\x00binary\rpage\r\n")
    copies = [delivered(raw, "1"), delivered(raw, "2", to="help+cc@example.org").replace(b"\n", b"\r\n"),
              delivered(raw, "3").replace(b"\x00", b"\x80")]  # Dovecot turns NUL into 0x80 on APPEND
    assert len({decode(copy).fingerprint for copy in copies}) == 1


def test_a_huge_mail_read_in_part_is_known_by_its_start_and_its_body_size():
    head, body = make_mail(message_id="<big@x.org>").split(b"\n\n", 1)
    start = body + b"A" * 1000

    def read(extra_headers: bytes, body_size: int) -> str:
        """What the source reads of a huge mail: its headers and the body's first bytes, with the mail's size."""
        raw = extra_headers + head + b"\n\n" + start
        return decode(raw, cut_from=len(extra_headers + head + b"\n\n") + body_size).fingerprint

    assert read(b"Received: by a\n", 5_000_000) == read(b"Received: by a much longer relay name\n", 5_000_000)
    assert read(b"Received: by a\n", 5_000_000) != read(b"Received: by a\n", 5_000_001)


def test_a_mail_recorded_under_the_old_fingerprint_is_known_when_read_again(fake_daemon):
    raw = scan()
    old = decode(raw)
    Message.create(message_id=old.message_id, fingerprint=old.old_fingerprint, direction="in", outcome="ignored",
                   raw_size=old.raw_size, created_at=fake_daemon.clock.now())
    pipeline: Pipeline = fake_daemon.pipeline
    assert pipeline.process(raw, 7).kind == "duplicate"
    # same old fingerprint, another file of another size: another mail
    assert pipeline.process(scan(file=b"%PDF-1.4 pages one and two"), 8).kind == "item"


# --- on Dovecot ---------------------------------------------------------------------------------

@pytest.fixture
def room(tmp_path, mailbox, smtp_capture) -> Mailroom:
    return Mailroom(tmp_path, mailbox, smtp_capture)


def acks(sent) -> int:
    return sum(1 for m in sent if m["To"] == ROSA and "We have your request" in m["Subject"])


@pytest.mark.parametrize("second", [scan("Bitte Raum Ö prüfen."), scan("Bitte Raum Ä prüfen.", file=b"%PDF page 2")],
                         ids=["non-ascii-text", "attachment"])
def test_a_reused_message_id_with_other_content_makes_a_second_item(room, second):
    sent = room.run(scan("Bitte Raum Ä prüfen."), second)
    assert Item.select().count() == 2 and acks(sent) == 2
    assert Event.select().where(Event.kind == "duplicate").count() == 0
    assert folder_counts(room.mailbox) == {"INBOX": 0, "Processed": 2}


def test_the_same_mail_delivered_twice_is_one_item_and_the_second_copy_is_noted(room, caplog):
    raw = scan()
    with caplog.at_level(logging.INFO, logger="inboxd.pipeline"):
        sent = room.run(delivered(raw, "1"), delivered(raw, "2", to="help+cc@example.org"))
    assert Item.select().count() == 1 and acks(sent) == 1
    (noted,) = Event.select().where(Event.kind == "duplicate")
    first = Message.get((Message.direction == "in") & (Message.outcome == "item"))
    assert noted.item_id == 1 and noted.message_id == first.id
    second = first.uid + 1
    assert f"the same mail again (uid {second}; first read as uid {first.uid}), already processed (item on IT-1)" \
        in noted.detail
    assert f"uid {second} <scan@x.org> from {ROSA}: duplicate of mail record {first.id}" in caplog.text
    assert folder_counts(room.mailbox) == {"INBOX": 0, "Processed": 2}  # both done: one item, one note


def test_a_huge_mail_delivered_twice_is_one_item_and_reused_ids_on_huge_mails_are_two(tmp_path, mailbox,
                                                                                         smtp_capture):
    room = Mailroom(tmp_path, mailbox, smtp_capture, extra='[limits]\nmax_message_size = "1MB"\n')
    pages = bytes(range(256)) * 6_000  # 1.5 MB: only the headers and the first 64 kB of the body are read
    raw = scan(file=pages)
    sent = room.run(delivered(raw, "1"), delivered(raw, "2", to="help+cc@example.org"), scan(file=pages + b"more"))
    assert Item.select().count() == 2 and acks(sent) == 2
    assert Event.select().where(Event.kind == "duplicate").count() == 1
    assert Event.select().where(Event.kind == "oversized").count() == 2
