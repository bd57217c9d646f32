"""The pipeline on an in-memory mailbox: items, acknowledgements, dispositions, duplicates, parking."""

import email
import shutil
import sys
from email.header import decode_header, make_header

from helpers import REPO, make_mail, write_config

from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.models import Event, Item, Message, Outbox
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource


def run(daemon, *mails):
    daemon.source.add(mails)
    daemon.ingest(daemon.source.open())
    daemon.sender.drain()
    return [email.message_from_bytes(raw) for _, _, raw in daemon.sender.transport.sent]


def test_request_becomes_item_with_acknowledgement(fake_daemon, clock):
    sent = run(fake_daemon, make_mail("Rosa Lind <rosa@example.org>", "Screen flickers", message_id="<r1@example.org>"))
    item = Item.get()
    assert (item.requester, item.requester_name, item.queue, item.status, item.owner) == \
        ("rosa@example.org", "Rosa Lind", "default", "new", None)
    assert item.created_at == clock.now() and item.acknowledged_at == clock.now()
    assert item.due_at.isoformat() == "2026-11-26T09:00:00+00:00"  # 3 business days, 10:00 Berlin
    ack, *announce = sent  # the requester first; nobody owns it yet: the queue's members hear of it, to #take it
    assert [a["To"] for a in announce] == ["ana@example.org", "bo@example.org"]  # each their own reply address
    assert {a["Subject"] for a in announce} == {f"[IT-{item.id}] New request: Screen flickers"}
    assert announce[0]["Reply-To"] != announce[1]["Reply-To"]
    assert all(a["Reply-To"].startswith(f"help+it{item.id}.") for a in announce)
    assert ack["To"] == "rosa@example.org"
    assert ack["Subject"] == f"[IT-{item.id}] We have your request: Screen flickers"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["In-Reply-To"] == "<r1@example.org>" and ack["References"] == "<r1@example.org>"
    assert ack["Reply-To"] == "help@example.org"
    assert Message.get(Message.direction == "out", Message.outcome == "ack").message_id == ack["Message-ID"]
    assert "Thursday 26 November 2026, 10:00" in ack.get_payload(decode=True).decode()
    assert fake_daemon.source.done == [1]
    assert [e.kind for e in Event.select().order_by(Event.id)] == ["created"]



def test_a_mail_interns_no_string_afresh(fake_daemon, monkeypatch):
    """Issue 15: pathlib interned each template's name again for every mail (render.py), and that churn doubled
    the interpreter's table of interned strings (+1.9 MB) after ~6,000 mails."""
    run(fake_daemon, make_mail("u0@example.org", "Printer 0 jammed"))  # the templates loaded, every module imported
    interned: list[str] = []
    intern = sys.intern
    monkeypatch.setattr(sys, "intern", lambda text: interned.append(text) or intern(text))
    sent = run(fake_daemon, *(make_mail(f"u{n}@example.org", f"Printer {n} jammed") for n in range(1, 6)))
    assert len(sent) > 5 and interned == []

def test_rule_assigns_round_robin_and_tells_the_owner(fake_daemon):
    sent = run(fake_daemon, *(make_mail(f"u{i}@example.org", f"Printer {i} jammed") for i in range(3)))
    owners = [i.owner for i in Item.select().order_by(Item.id)]
    assert owners == ["ana@example.org", "bo@example.org", "ana@example.org"]
    assigned = [m for m in sent if "Assigned to you" in m["Subject"]]
    assert [m["To"] for m in assigned] == owners
    assert {i.status for i in Item.select()} == {"open"} and Item.get().tags == ["printer"]


def test_least_loaded_assignment(tmp_path, clock):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.toml").write_text('[[rule]]\nname = "ll"\nmatch.subject = { contains = "vpn" }\n'
                                  'queue = "default"\nassign = "least-loaded"\n')
    daemon = Daemon(load_config(write_config(tmp_path, rules=rules)), clock=clock,
                    source=FakeSource(), transport=FakeTransport())
    Item.create(subject="old", requester="x@example.org", queue="default", owner="ana@example.org",
                status="working", created_at=clock.now())
    run(daemon, make_mail(subject="VPN 1"), make_mail(subject="VPN 2"), make_mail(subject="VPN 3"))
    assert [i.owner for i in Item.select().order_by(Item.id)][1:] == \
        ["bo@example.org", "ana@example.org", "bo@example.org"]


def test_urgent_rule_uses_urgent_ack(fake_daemon):
    ack = next(m for m in run(fake_daemon, make_mail("m@board.example.org", "Outage of the VPN"))
               if m["To"] == "m@board.example.org")
    assert "Urgent request received" in ack["Subject"]
    assert Item.get().priority == "high" and Item.get().tags == ["vip"]


def test_decline_answers_with_reason_and_creates_no_item(fake_daemon):
    (reply,) = run(fake_daemon, make_mail("lea@example.org", "phone", "please set up my personal phone"))
    assert Item.select().count() == 0
    assert reply["To"] == "lea@example.org" and reply["Subject"] == "Re: phone"
    assert "company devices only" in reply.get_payload(decode=True).decode()
    assert Message.get(Message.direction == "in").outcome == "declined"


def test_redirect_forwards_original_and_tells_requester(fake_daemon):
    raw = make_mail("ken@example.org", "payroll slip wrong", "tax class")
    forward, notice = run(fake_daemon, raw)
    assert forward["To"] == "payroll@example.org" and forward["Subject"] == "Fwd: payroll slip wrong"
    attached = [p for p in forward.walk() if p.get_filename() == "original.eml"]
    assert attached and attached[0].get_payload(decode=True) == raw
    assert notice["To"] == "ken@example.org" and "payroll@example.org" in notice.get_payload(decode=True).decode()
    assert Item.select().count() == 0


def test_guarded_mail_is_stored_with_reason_and_never_answered(fake_daemon):
    sent = run(fake_daemon, make_mail("x@example.org", "Out of office", headers={"Auto-Submitted": "auto-replied"}),
               make_mail("help@example.org", "our own ack"))
    assert sent == [] and Item.select().count() == 0
    reasons = [m.reason for m in Message.select().order_by(Message.id)]
    assert reasons == ["auto-submitted: Auto-Submitted: auto-replied",
                       "own-mail: sent by the team address help@example.org"]
    assert fake_daemon.source.done == [1, 2]


def test_same_message_id_is_processed_once(fake_daemon):
    raw = make_mail(message_id="<same@example.org>")
    run(fake_daemon, raw, raw)
    run(fake_daemon, raw)
    assert Item.select().count() == 1 and Outbox.select().count() == 3  # announcement to each member, and ack
    assert fake_daemon.source.done == [1, 2, 3]  # duplicates are still marked done


def test_mail_without_sender_is_tracked_but_not_answered(fake_daemon):
    sent = run(fake_daemon, b"Subject: orphan\r\nMessage-ID: <o@x>\r\n\r\nwho am I\r\n")
    assert [m["To"] for m in sent] == ["ana@example.org", "bo@example.org"]  # the team knows; nobody to ack
    assert Item.get().subject == "orphan"
    assert Event.get(Event.kind == "not-acknowledged").detail == "the mail has no sender address"


def test_broken_template_parks_the_mail_and_commits_nothing(tmp_path, clock):
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    daemon = Daemon(load_config(write_config(tmp_path, templates=templates)), clock=clock,
                    source=FakeSource(), transport=FakeTransport())
    (templates / "ack.txt").write_text("Subject: x\n\n{{ item.nonexistent }}\n")
    run(daemon, make_mail(message_id="<p@example.org>"))
    assert Item.select().count() == 0 and Outbox.select().count() == 0
    parked = Message.get()
    assert parked.outcome == "parked" and "nonexistent" in parked.reason
    assert daemon.source.done == [] and 1 in daemon.source.mails  # kept on the server
    (templates / "ack.txt").write_text((REPO / "templates" / "ack.txt").read_text())
    daemon.pipeline.process(daemon.source.mails[1], 1)  # a retry after the fix goes through
    assert Item.select().count() == 1


def test_batches_mark_done_per_batch_and_remember_last_uid(tmp_path, clock):
    from inboxd.models import MailboxState
    daemon = Daemon(load_config(write_config(tmp_path, batch_size=2)), clock=clock,
                    source=FakeSource(), transport=FakeTransport())
    run(daemon, *(make_mail(f"u{i}@example.org") for i in range(5)))
    assert Item.select().count() == 5 and daemon.source.done == [1, 2, 3, 4, 5]
    assert MailboxState.get().last_uid == 5


def test_uidvalidity_change_rereads_without_doubles(fake_daemon):
    run(fake_daemon, make_mail(message_id="<v@example.org>"))
    fake_daemon.source.uidvalidity = 2
    fake_daemon.source.mails[1] = make_mail(message_id="<v@example.org>")  # same mail, new folder
    fake_daemon.ingest(fake_daemon.source.open())
    assert Item.select().count() == 1


def test_reused_message_id_with_other_content_is_another_mail(fake_daemon):
    run(fake_daemon, make_mail("a@example.org", "First", message_id="<reused@example.org>"),
        make_mail("b@example.org", "Second", message_id="<reused@example.org>"))
    assert [i.subject for i in Item.select().order_by(Item.id)] == ["First", "Second"]


def test_crlf_in_subject_or_name_cannot_add_a_header(fake_daemon):
    raw = (b"From: =?utf-8?q?Eve=0D=0ABcc=3A_all=40example=2Eorg?= <eve@example.org>\r\n"
           b"Subject: =?utf-8?q?hello=0D=0ABcc=3A_victim=40example=2Eorg?=\r\nMessage-ID: <inj@x>\r\n\r\nhi\r\n")
    announce = run(fake_daemon, raw)  # a line break in the From's name: tracked, nobody acknowledged
    assert announce and all(a["Bcc"] is None and "eve" not in a["To"] for a in announce)
    assert all("hello Bcc: victim@example.org" in a["Subject"] for a in announce)
    raw = raw.replace(b"=0D=0ABcc=3A_all=40example=2Eorg", b"_Smith").replace(b"<inj@x>", b"<inj2@x>")
    ack = next(m for m in run(fake_daemon, raw) if m["To"] == "eve@example.org")
    assert ack["Bcc"] is None and ack["Subject"] == "[IT-2] We have your request: hello Bcc: victim@example.org"


def test_a_megabyte_subject_without_spaces_still_gets_its_acknowledgement(fake_daemon):
    ack, *_ = run(fake_daemon, make_mail("rosa@example.org", "x" * 1_000_000, "Please help."))
    raw = next(raw for _, to, raw in fake_daemon.sender.transport.sent if to == ["rosa@example.org"])
    assert ack["To"] == "rosa@example.org" and max(len(line) for line in raw.split(b"\r\n")) <= 998
    subject = str(make_header(decode_header(ack["Subject"])))
    assert subject.startswith("[IT-1] We have your request: xxx") and subject.endswith("…") and len(subject) == 200


def test_an_iso_2022_jp_body_is_read_as_text_in_the_item_and_the_teams_mail(fake_daemon):
    from email.mime.text import MIMEText
    mail = MIMEText("こんにちは、プリンターが壊れました。", "plain", "iso-2022-jp")  # 7 bit, as Japanese clients send
    mail["From"], mail["To"], mail["Subject"] = "taro@example.jp", "help@example.org", "printer"
    mail["Message-ID"] = "<jp-1@example.jp>"
    _ack, *announce = run(fake_daemon, mail.as_bytes())
    assert Message.get(Message.message_id == "<jp-1@example.jp>").body == "こんにちは、プリンターが壊れました。"
    text = announce[0].get_payload(decode=True).decode()
    assert "プリンターが壊れました" in text and "\x1b" not in text
