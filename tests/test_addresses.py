"""One strict reading of From, To and Cc: an ambiguous From names no sender; address headers are read within bounds."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conversation_helpers import Conversation, reply
from helpers import write_config

from inboxd.clock import FixedClock
from inboxd.config import load_config
from inboxd.conversation import authentication_problem
from inboxd.daemon import Daemon
from inboxd.message import MAX_ADDRESSES, decode
from inboxd.models import Item
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource

# Froms a lenient reader took for a team member (bo@example.org) or for the wrong person.
FORGED = [
    "bo@example.org <evil@evil.test>",  # read as bo before: an unquoted address as display name
    "bo@example.org)<evil@evil.test>",  # read as bo before
    "bo@example.org <evil>",
    "Bo <bo@example.org> <evil@evil.test>",
    "<real@example.org> =?utf-8?q?x<evil@evil.test>?=",
    "real@example.org <=?utf-8?q?evil@evil.test?=>",
    "bo@example.org, evil@evil.test",  # several addresses
    "team: bo@example.org;",  # a group
    "team: bo@example.org, evil@evil.test;",
    "bo@example.org, ",  # an empty element
    "=?utf-8?q?bo?=@example.org",  # an encoded word as the local part
    "<@evil.test:bo@example.org>",  # an obsolete route
    '"bo@example.org" <evil@evil.test>',  # a display name that is another address
    "=?utf-8?b?Ym9AZXhhbXBsZS5vcmc=?= <evil@evil.test>",  # the same, encoded
    "evil@evil.test (bo@example.org)",  # an old-style name (a comment) that is another address
    "Bo <bo@example.org",  # unterminated
    '"xbo@example.org" <bo@example.org>',  # a name that only contains the address is another address
    '"bo@example.org.evil.test" <bo@example.org>',
    '"unterminated <bo@example.org>',
]
# RFC 2047 display names hiding ':', '<', ',', '"', ';' or CR/LF: before, an acknowledgement went to
# "_x@evil.test?=" and the like instead of the sender.
ENCODED_TRICKS = [
    "=?utf-8?q?x<_x@evil.test?= <real@example.org>",
    "=?utf-8?q?x:_x@evil.test?= <real@example.org>",
    "=?utf-8?q?x,_x@evil.test?= <real@example.org>",
    "=?utf-8?q?x=22_x@evil.test?= <real@example.org>",
    "=?utf-8?q?a=3A_x@evil.test=3B?= <real@example.org>",
    "=?utf-8?q?x=0D=0A_x@evil.test?= <real@example.org>",
    "=?utf-8?q?x=0D=0ABcc:_x@evil.test?= <real@example.org>",
    "=?utf-8?q?x=0D=0ATo:_x@evil.test?= <real@example.org>",
    "=?utf-8?b?eDxfeEBldmlsLnRlc3Q+?= <real@example.org>",
    "=?utf-8?q?=3Cevil=40evil.test=3E?= <real@example.org>",
    "=?utf-8?q?evil@evil.test?= <real@example.org>",
    "=?utf-8?q?x=0D=0A?= <real@example.org>",  # a line break alone
    "=?utf-8?b?eDxfeEBldmlsLnRlc3Q+?= <real@example.org>",  # base64: "x<_x@evil.test>"
]
# Odd but unambiguous: (From, sender, name).
CLEAN = [
    ("Rosa Lind <Rosa@Example.org>", "rosa@example.org", "Rosa Lind"),
    ("rosa@example.org", "rosa@example.org", ""),
    ("<rosa@example.org>", "rosa@example.org", ""),
    ("Sandy M. <sandy@example.org>", "sandy@example.org", "Sandy M."),  # a period in an unquoted name
    ('"Lind, Rosa" <rosa@example.org>', "rosa@example.org", "Lind, Rosa"),
    ("rosa@example.org (Rosa Lind)", "rosa@example.org", "Rosa Lind"),
    ('"rosa@example.org" <rosa@example.org>', "rosa@example.org", "rosa@example.org"),  # Outlook's way
    ("=?utf-8?q?J=C3=BCrgen_M=C3=BCll?= =?utf-8?q?er?= <jm@example.org>", "jm@example.org", "Jürgen Müller"),
    ('"=?utf-8?q?J=C3=BCrgen?=" <jm@example.org>', "jm@example.org", "Jürgen"),  # encoded in quotes: name only
    ("=?utf-8?q?x:?= <real@example.org>", "real@example.org", "x:"),  # a colon cannot make an address
    ("Rosa\r\n Lind\r\n <rosa@example.org>", "rosa@example.org", "Rosa Lind"),  # folded
]
UNUSABLE = ['"a b"@example.org', '"bo@example.org"@evil.test', "bo@[192.0.2.1]", "mailer-daemon", "@example.org",
            "bo@localhost", ""]


def mail_from(*froms: str, to: str = "help@example.org", cc: str | None = None, body: str = "hi") -> bytes:
    """A raw mail with these From lines, exactly as written."""
    lines = [f"From: {value}" for value in froms] + [f"To: {to}", "Subject: s", "Message-ID: <m@example.org>"]
    lines += [f"Cc: {cc}"] if cc is not None else []
    return ("\r\n".join(lines) + f"\r\n\r\n{body}\r\n").encode()


@pytest.mark.parametrize("value", FORGED + ENCODED_TRICKS)
def test_an_ambiguous_from_names_no_sender(value):
    msg = decode(mail_from(value))
    assert (msg.sender, msg.sender_name) == ("", "")
    assert msg.sender_ambiguous and msg.sender_problem.startswith("a From line ")
    assert "evil" not in msg.sender_problem and "bo@" not in msg.sender_problem  # the reason, never the text


@pytest.mark.parametrize("value, sender, name", CLEAN)
def test_a_clean_from_names_its_one_address(value, sender, name):
    msg = decode(mail_from(value))
    assert (msg.sender, msg.sender_name, msg.sender_problem) == (sender, name, "")
    assert not msg.sender_ambiguous


@pytest.mark.parametrize("value", UNUSABLE)
def test_an_address_we_could_not_answer_names_no_sender(value):
    msg = decode(mail_from(value))
    assert msg.sender == "" and msg.sender_ambiguous


def test_raw_utf8_addresses_are_clean():
    msg = decode("From: Jöhn <jöhn@exämple.org>\r\nSubject: s\r\n\r\nhi\r\n".encode())
    assert (msg.sender, msg.sender_name, msg.sender_problem) == ("jöhn@exämple.org", "Jöhn", "")


def test_two_from_lines_or_none_name_no_sender_and_sender_stands_in_only_for_a_missing_from():
    assert decode(mail_from("bo@example.org", "bo@example.org")).sender_problem == "2 From lines"
    assert decode(b"Subject: s\r\n\r\nhi\r\n").sender_problem == "no From line"
    assert decode(b"Sender: Rosa <rosa@example.org>\r\nSubject: s\r\n\r\nhi\r\n").sender == "rosa@example.org"
    stood_in = decode(b"From: bo@example.org <evil@evil.test>\r\nSender: bo@example.org\r\nSubject: s\r\n\r\nhi\r\n")
    assert stood_in.sender == "" and stood_in.sender_ambiguous


def test_a_huge_or_deeply_nested_from_is_refused_quickly():
    started = time.perf_counter()
    assert decode(mail_from("(" * 50_000 + "bo@example.org")).sender == ""
    assert decode(mail_from(", ".join(f"u{i}@example.org" for i in range(100_000)))).sender == ""
    assert decode(mail_from("(" * 1_500 + "bo@example.org" + ")" * 1_500)).sender == ""  # RecursionError inside
    assert decode(mail_from("a@[" + "a" * 500)).sender == ""  # the stdlib parser fails with AttributeError
    assert time.perf_counter() - started < 1.0


# --- To and Cc ---------------------------------------------------------------------------------

def test_to_and_cc_are_read_strictly():
    to = ('smith@example.org, bo@example.org <evil@evil.test>, "help+it1.0badc0de@example.org" <tom@example.org>, '
          'team: ana@example.org, Bo <BO@example.org>;')
    cc = "undisclosed-recipients:;, =?utf-8?q?x<_x@evil.test?= <real@example.org>, ok@example.org"
    msg = decode(mail_from("rosa@example.org", to=to, cc=cc))
    assert msg.to == ("smith@example.org", "ana@example.org", "bo@example.org")  # no evil, no name-borne address
    assert msg.cc == ("ok@example.org",)


def test_only_the_first_50_recipients_count():
    cc = ", ".join(f"user{i}@example.org" for i in range(80))
    expected = tuple(f"user{i}@example.org" for i in range(MAX_ADDRESSES))
    assert decode(mail_from("rosa@example.org", cc=cc)).cc == expected


def test_a_100000_address_cc_decodes_well_under_a_second():
    cc = ", ".join(f"User {i} <user{i}@example.org>" for i in range(100_000))
    raw = mail_from("rosa@example.org", cc=cc)
    started = time.perf_counter()
    msg = decode(raw)
    elapsed = time.perf_counter() - started
    assert len(raw) > 3_000_000 and len(msg.cc) == MAX_ADDRESSES and msg.cc[0] == "user0@example.org"
    assert msg.sender == "rosa@example.org" and msg.original == raw  # the mail itself is kept whole
    assert elapsed < 0.5, f"{elapsed:.2f}s"  # about 0.05 s here; it was 3.2 s (mail-parser read every address)


@pytest.mark.parametrize("shape", ["(a)", "a,", "a.", '"\\a', "=?utf-8?q?a?= ", "<", "@", "g:a@b.org;", "(((((a)))))"])
def test_hostile_to_and_cc_stay_bounded(shape):
    value = shape * (400_000 // len(shape))
    started = time.perf_counter()
    msg = decode(mail_from("rosa@example.org", to=value, cc=value))
    assert msg.sender == "rosa@example.org" and time.perf_counter() - started < 1.0


def test_a_cut_header_never_yields_half_an_address():
    # The 4096-character cut falls inside the second address: it is dropped, not read as "ana@example.o".
    first = "a" * 4070 + "@example.org"
    msg = decode(mail_from("rosa@example.org", to=f"{first}, ana@example.org.evil.test"))
    assert msg.to == (first,)


# --- no commands from an ambiguous From --------------------------------------------------------

def proven_daemon(tmp_path: Path, clock: FixedClock) -> Daemon:
    """Proof not asked for, so that only the reading of the From can refuse a command."""
    config = load_config(write_config(tmp_path, extra="[commands]\nrequire_secret = false\n"))
    return Daemon(config, clock=clock, source=FakeSource(), transport=FakeTransport())


def forged(mail: bytes, value: str) -> bytes:
    """A mail with its From line replaced by `value`, byte for byte."""
    head, _, body = mail.partition(b"\n\n")
    lines = [f"From: {value}".encode() if line.startswith(b"From:") else line for line in head.split(b"\n")]
    return b"\n".join(lines) + b"\n\n" + body


@pytest.mark.parametrize("value", [FORGED[0], FORGED[1], FORGED[12], "=?utf-8?q?x<_x@evil.test?= <bo@example.org>"])
@pytest.mark.parametrize("keywords", ["#done fixed it", "#redirect evil@evil.test"])
def test_a_forged_member_from_cannot_command(tmp_path, clock, value, keywords):
    talk = Conversation(proven_daemon(tmp_path, clock))
    announcement = talk.last(to="bo@example.org")
    sent = talk.send(forged(reply(announcement, "bo@example.org", keywords), value))
    item = talk.item
    assert (item.status, item.owner) == ("new", None)
    assert [e.kind for e in talk.events()] == ["created", "stranger", "refused"]  # a note from someone not on it
    assert not [m for m in sent if "evil" in m["To"] or "rosa" in m["To"]]  # nothing to evil, nothing relayed
    assert len([m for m in sent if "bo@example.org" in m["To"]]) <= 1
    # The same mail with bo's own From is obeyed: the From alone made the difference.
    talk.send(reply(announcement, "bo@example.org", keywords))
    assert talk.item.status in ("done", "redirected")


@pytest.mark.parametrize("value", ENCODED_TRICKS)
def test_an_encoded_name_trick_gets_no_acknowledgement_anywhere(tmp_path, clock, value):
    daemon = proven_daemon(tmp_path, clock)
    daemon.source.add([mail_from(value.replace("real@example.org", "rosa@example.org"))])
    daemon.ingest(daemon.source.open())
    daemon.sender.drain()
    recipients = {r for _, to, _ in daemon.sender.transport.sent for r in to}
    assert recipients <= {"ana@example.org", "bo@example.org"}  # the team's announcement only
    assert Item.get().requester == "" and Item.get().acknowledged_at is None


def test_authentication_problem_refuses_an_ambiguous_sender_however_it_got_there(config):
    from dataclasses import replace
    msg = replace(decode(mail_from("bo@example.org")), sender_problem="a From line with several addresses")
    assert msg.sender == "bo@example.org" and config.team.speaks_for_team(msg.sender)
    problem = authentication_problem(msg, config, secret_ok=True)
    assert problem and "names no one address we can be sure of (a From line with several addresses)" in problem
    assert authentication_problem(decode(mail_from("bo@example.org")), config, secret_ok=True) is None
