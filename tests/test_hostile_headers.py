"""Bounded work per mail on hostile headers (issue 13, item 4): what mail-parser is given and what is looked up
is bounded, whatever the mail's size. The seconds per shape are bench/hostile.py's (no timed assertions here)."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message

import pytest
from helpers import REPO, make_mail
from test_e2e import folder_counts
from test_security import Mailroom

from inboxd import message as message_module
from inboxd import queries
from inboxd.message import HEADER_BLOCK_CHARS, HEADER_CHARS, MAX_ADDRESSES, SAME_HEADERS, decode
from inboxd.models import Item
from inboxd.threads import MAX_TAGS, find_thread, tagged_ids

sys.path.insert(0, str(REPO / "bench"))
from hostile import folded, mail, shapes  # noqa: E402  (the benchmark's shapes, at full size)

SHAPES = shapes()


@pytest.fixture
def parsed(monkeypatch) -> list[Message]:
    """The mails decode hands to mail-parser."""
    given: list[Message] = []
    real = message_module.mailparser.MailParser

    def spy(email: Message):
        given.append(email)
        return real(email)
    monkeypatch.setattr(message_module.mailparser, "MailParser", spy)
    return given


@pytest.mark.parametrize("shape", [s for s in SHAPES if "baseline" not in s])
def test_mail_parser_reads_a_bounded_header_block_of_every_shape(shape, parsed):
    msg = decode(SHAPES[shape]("rosa@example.org"))
    (email,) = parsed
    fields = list(email.raw_items())
    assert sum(len(name) + len(value) for name, value in fields) <= HEADER_BLOCK_CHARS
    assert all(len(value) <= HEADER_CHARS for _, value in fields)
    assert max(Counter(name.lower() for name, _ in fields).values()) <= SAME_HEADERS
    assert len(msg.subject) <= HEADER_CHARS and len(msg.to) <= MAX_ADDRESSES
    assert "paper jam" in msg.text and msg.message_id.startswith("<hostile-")


def test_a_normal_mail_goes_to_mail_parser_as_it_is_with_only_the_headers_it_is_asked_about(parsed):
    raw = make_mail(headers={"References": "<a@x.org> <b@x.org>", "Received": "from a by b"})
    decode(raw)
    (email,) = parsed
    whole = message_from_bytes(raw)
    assert list(email.raw_items()) == [(name, value) for name, value in whole.raw_items()
                                       if name in ("Subject", "Content-Type", "Content-Transfer-Encoding",
                                                   "MIME-Version")]  # its From, To, Date, Received: decode's
    assert email.get_payload() == whole.get_payload()


def test_what_is_kept_of_a_long_header_is_its_useful_end(caplog):
    refs = decode(SHAPES["References: 100,000 ids"]("rosa@example.org")).references
    assert refs[-1] == "<id99999@example.org>" and len(refs) < 1000  # the newest ids are last
    with caplog.at_level(logging.INFO, logger="inboxd.message"):
        msg = decode(SHAPES["20,000 Received lines"]("rosa@example.org"))
    received = msg.headers["received"]
    assert len(received) == SAME_HEADERS and received[0].startswith("from relay0.")  # the newest hops are first
    assert f"{msg.message_id}: headers cut to their bounds for reading, 57 of 20007 fields kept" in caplog.text
    subject = decode(SHAPES["Subject: 50,000 encoded words"]("rosa@example.org")).subject
    assert subject.startswith("Wörter 0 Wörter 1") and "=?" not in subject  # cut between words, not in one


def test_a_header_is_cut_at_the_same_place_in_lf_and_crlf_copies():
    raw = SHAPES["Subject: 50,000 encoded words"]("rosa@example.org")
    assert decode(raw).subject == decode(raw.replace(b"\r\n", b"\n")).subject


def test_only_the_first_tags_count_each_once():
    subject = "Re: [IT-7] [IT-7] [HR-1] [it-8] " + " ".join(f"[IT-{n}]" for n in range(100, 100_000))
    assert tagged_ids(subject, "IT") == [7, 8, 100, 101, 102][:MAX_TAGS]


class CountingLookup:
    """A ThreadLookup of no items that counts what it is asked."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def item(self, number):
        self.asked.append(number)

    def item_of_mail(self, message_ids, outgoing_only=False):
        return None

    def kind_of_mail(self, message_id):
        return None


def test_tags_and_reply_addresses_naming_the_same_items_are_looked_up_once_each(config):
    team = config.team
    addresses = [f"help+it{n}.{'0' * 16}@example.org" for n in (3, 1, 9)]  # reply addresses, wrong tokens
    msg = decode(mail("rosa@example.org", folded(f"[IT-{n % 4}]" for n in range(100_000)), to=", ".join(addresses)))
    lookup = CountingLookup()
    assert find_thread(msg, team, lookup) is None
    assert lookup.asked == [0, 1, 2, 3, 9]  # the four tags, then the one address not tagged; no number twice


# --- on Dovecot ---------------------------------------------------------------------------------

def test_every_hostile_shape_becomes_an_item_through_dovecot_with_bounded_lookups(tmp_path, mailbox, smtp_capture,
                                                                                    monkeypatch):
    asked: list[int] = []
    real = queries.StoredThreads.item
    monkeypatch.setattr(queries.StoredThreads, "item", lambda self, number: asked.append(number) or real(self, number))
    room = Mailroom(tmp_path, mailbox, smtp_capture)
    senders = {shape: f"sender{n}@example.org" for n, shape in enumerate(SHAPES)}
    sent = room.run(*(make(senders[shape]) for shape, make in SHAPES.items()))
    items = {item.requester: item for item in Item.select()}
    assert len(items) == len(SHAPES) and "" in items  # the 50,000-word From name names no one clearly
    assert {s for shape, s in senders.items() if "From name" not in shape} == set(items) - {""}
    assert len(asked) == 2 * MAX_TAGS  # the two tag shapes, the first five tags each, no more
    acknowledged = {m["To"] for m in sent if "We have your request" in str(make_header(decode_header(m["Subject"])))}
    assert acknowledged == set(items) - {""}
    assert folder_counts(mailbox) == {"INBOX": 0, "Processed": len(SHAPES)}
