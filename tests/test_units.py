"""Direct tests of the pieces the pipeline joins: threading, intake, the composer and the tracker.

Three or four short cases each, with plain values (a dict as the thread lookup, a dict as the
assignment history); only the tracker's cases touch a (temporary SQLite) database.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.charset import QP, Charset
from email.mime.text import MIMEText

import pytest
from inboxd import caps, intake, mailout
from inboxd.checks import load_rules_and_templates
from inboxd.conversation import decide
from inboxd.domain import ItemView, PlanKind, Reply, Status
from inboxd.mailout import Composer, text_part
from inboxd.message import decode
from inboxd.models import Event, Item, Message, open_database
from inboxd.routing import Decision, Queue
from inboxd.threads import find_thread, item_answered_automatically, secret_address
from inboxd.tracker import Tracker

from conftest import MONDAY_10
from helpers import make_mail

ITEM = ItemView(id=7, subject="Printer jammed", requester="rosa@example.org", requester_name="Rosa",
                owner="ana@example.org", queue="default", status=Status.OPEN, secret="0123456789abcdef",
                created_at=MONDAY_10, due_at=MONDAY_10 + timedelta(days=3), last_told_at=MONDAY_10)


@dataclass
class Lookup:
    """`threads.ThreadLookup` over a dict: items by number, and which mail ids belong to which item."""

    items: dict[int, ItemView] = field(default_factory=dict)
    mail: dict[str, tuple[int, str]] = field(default_factory=dict)  # message id -> (item number, in|out)
    kinds: dict[str, str] = field(default_factory=dict)  # message id of our mail -> its template

    def item(self, number: int) -> ItemView | None:
        return self.items.get(number)

    def item_of_mail(self, message_ids: Sequence[str], outgoing_only: bool = False) -> ItemView | None:
        for message_id in message_ids:
            number, direction = self.mail.get(message_id, (0, ""))
            if number and (direction == "out" or not outgoing_only):
                return self.items[number]
        return None

    def kind_of_mail(self, message_id: str) -> str | None:
        return self.kinds.get(message_id)


class TestThreads:
    def test_a_tag_of_an_existing_item_finds_it(self, config):
        msg = decode(make_mail(subject="Re: [IT-7] Printer jammed"))
        thread = find_thread(msg, config.team, Lookup({7: ITEM}))
        assert thread is not None and thread.item == ITEM and thread.via == "tag" and not thread.secret_ok

    def test_a_tag_of_a_missing_item_is_not_trusted(self, config):
        msg = decode(make_mail(subject="Re: [IT-8] Printer jammed"))
        assert find_thread(msg, config.team, Lookup({7: ITEM})) is None

    def test_the_secret_address_proves_the_mail_came_back_to_its_member(self, config):
        ana = secret_address(config.team, ITEM, "ana@example.org")
        msg = decode(make_mail("ana@example.org", subject="no tag", to=ana))
        thread = find_thread(msg, config.team, Lookup({7: ITEM}))
        assert thread is not None and thread.via == "address" and thread.secret_ok
        other_key = secret_address(config.team, replace(ITEM, secret="beef"), "ana@example.org")
        for sender, to in (("ana@example.org", other_key), ("bo@example.org", ana)):  # another key, another member
            thread = find_thread(decode(make_mail(sender, subject="no tag", to=to)), config.team, Lookup({7: ITEM}))
            assert thread is not None and not thread.secret_ok

    def test_only_the_first_recipients_may_carry_the_secret(self, config):
        ana = secret_address(config.team, ITEM, "ana@example.org")
        guesses = ", ".join(f"help+it7.{n:016x}@example.org" for n in range(1, 6))
        late = decode(make_mail("ana@example.org", subject="x", to=f"{guesses}, {ana}"))
        thread = find_thread(late, config.team, Lookup({7: ITEM}))
        assert thread is not None and not thread.secret_ok  # the sixth recipient is not looked at

    def test_a_bounce_quoting_our_message_id_finds_the_item(self, config):
        ours = "<1.2.inboxd@example.org>"
        bounce = decode(make_mail(subject="Undelivered", body=f"Original message:\nMessage-ID: {ours}\n"))
        assert bounce.quoted_ids == (ours,)
        lookup = Lookup({7: ITEM}, {ours: (7, "out")})
        assert item_answered_automatically(bounce, config.team, lookup) == ITEM
        assert item_answered_automatically(bounce, config.team, Lookup({7: ITEM}, {ours: (7, "in")})) is None


@dataclass
class History:
    """`intake.AssignmentHistory` over plain values."""

    last: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def last_owner(self, queue: str, members: tuple[str, ...]) -> str | None:
        return self.last

    def open_counts(self, members: tuple[str, ...]) -> dict[str, int]:
        return self.counts


class TestIntake:
    def test_round_robin_takes_the_member_after_the_last(self, config):
        queue = Queue("facilities", assign="round-robin")
        assert intake.choose_owner(queue, config, History(last="ana@example.org")) == "bo@example.org"
        assert intake.choose_owner(queue, config, History(last="bo@example.org")) == "ana@example.org"
        assert intake.choose_owner(queue, config, History(), away={"ana@example.org"}) == "bo@example.org"

    def test_least_loaded_takes_the_member_with_fewest_open_items(self, config):
        queue = Queue("facilities", assign="least-loaded")
        counts = {"ana@example.org": 3, "bo@example.org": 1}
        assert intake.choose_owner(queue, config, History(counts=counts)) == "bo@example.org"

    def test_a_new_item_is_planned_whole_before_anything_is_written(self, config):
        msg = decode(make_mail(subject="[IT-3] Screen flickers"))
        decision = Decision("screens", Queue("default", assign="ana@example.org"), ())
        new = intake.plan_new_item(config, msg, decision, "ana@example.org", (), MONDAY_10)
        assert new.item.id is None and new.item.subject == "Screen flickers" and new.item.status == Status.OPEN
        assert [kind for _, kind, _ in new.events] == ["assigned"]
        assert [(r.template, r.to) for r in new.replies] == [("ack", ("rosa@example.org",)),  # who waits, first
                                                             ("assigned", ("ana@example.org",))]
        assert new.created == f"from rosa@example.org by rule screens: {decision.disposition}"



class TestCaps:
    """`caps`: loops told from busy people by what loops look like."""

    def test_a_busy_colleague_is_answered_and_announced(self, config):
        signs = caps.SenderSigns(automatic=10, requests=10)
        assert caps.why_not_answered(config, "rosa@example.org", signs) is None
        assert caps.why_announcement_held(config, "rosa@example.org", signs) is None

    def test_the_same_text_again_is_not_answered(self, config):
        why = caps.why_not_answered(config, "robot@example.net", caps.SenderSigns(1, 1, same_text_as="IT-7"))
        assert why is not None and "IT-7" in why and "robot@example.net" in why

    def test_past_the_count_the_sender_is_not_answered_and_the_team_hears_in_a_batch(self, config):
        limit = config.limits.automatic_per_sender
        assert caps.why_not_answered(config, "x@example.org", caps.SenderSigns(limit - 1, 0)) is None
        why = caps.why_not_answered(config, "x@example.org", caps.SenderSigns(limit, 0))
        assert why is not None and "automatic_per_sender" in why
        assert caps.why_announcement_held(config, "x@example.org", caps.SenderSigns(0, limit - 1)) is None
        held = caps.why_announcement_held(config, "x@example.org", caps.SenderSigns(0, limit))
        assert held is not None and f"sent {limit + 1} requests" in held

    def test_an_item_past_its_bound_is_held(self, config):
        bound = config.limits.mails_per_item
        assert caps.why_item_held(config, bound - 1) is None
        why = caps.why_item_held(config, bound)
        assert why is not None and "mails_per_item" in why

    def test_no_sender_no_answer_to_hold_but_its_flood_is_batched(self, config):
        assert caps.why_not_answered(config, "", caps.SenderSigns(999, 999, "IT-1")) is None
        held = caps.why_announcement_held(config, "", caps.SenderSigns(0, 999))
        assert held is not None and "without a sender address" in held

    def test_the_core_of_a_subject_drops_prefixes_and_tags(self):
        assert caps.subject_core("RE: [IT-10] AW: Fwd: We have  your request") == "we have your request"
        assert caps.subject_core("Re: [Foo #12] Sv: Printer") == "printer"
        assert caps.subject_core("Printer: toner low") == "printer: toner low"


class TestComposer:
    @pytest.fixture
    def composer(self, config):
        _, renderer = load_rules_and_templates(config)
        return Composer(config, renderer)

    def test_an_answer_threads_on_the_mail_it_answers(self, composer):
        msg = decode(make_mail(message_id="<q@example.org>", headers={"References": "<p@example.org>"}))
        [mail] = composer.compose([Reply("ack", (msg.sender,), acknowledges=True, automatic=True)],
                                  composer.context(ITEM, msg), ITEM, MONDAY_10, msg)
        parsed = email.message_from_bytes(mail.raw)
        assert parsed["In-Reply-To"] == "<q@example.org>" and parsed["References"] == "<p@example.org> <q@example.org>"
        assert parsed["X-Inboxd-Ref"] == "IT-7" and mail.subject.startswith("[IT-7]")
        body = parsed.get_payload(decode=True).decode()
        assert mail.acknowledges and mail.automatic and mail.text.replace("\n", "\r\n") == body

    def test_mail_to_the_requester_about_an_owners_reply_threads_on_the_request(self, composer):
        owner_mail = decode(make_mail(sender="ana@example.org", subject="Re: [IT-7] Printer jammed"))
        [mail] = composer.compose([Reply("relay", ("rosa@example.org",), to_requester=True)],
                                  composer.context(ITEM, owner_mail) | {"message": "Fixed."}, ITEM, MONDAY_10,
                                  owner_mail, opening_id="<request@example.org>")
        assert email.message_from_bytes(mail.raw)["In-Reply-To"] == "<request@example.org>"

    def test_team_mail_carries_the_secret_reply_address_when_it_is_required(self, config, composer):
        strict = Composer(replace(config, commands=replace(config.commands, require_secret=True)), composer.renderer)
        msg = decode(make_mail())
        [mail] = strict.compose([Reply("assigned", ("ana@example.org",), threaded=False, internal=True)],
                                strict.context(ITEM, msg), ITEM, MONDAY_10, msg)
        assert email.message_from_bytes(mail.raw)["Reply-To"] == secret_address(config.team, ITEM, "ana@example.org")

    def test_files_of_the_mail_being_answered_go_along(self, composer):
        raw = make_mail(sender="ana@example.org")
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        parsed.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="quote.pdf")
        msg = decode(parsed.as_bytes())
        [mail] = composer.compose([Reply("relay", ("rosa@example.org",), to_requester=True, carry_attachments=True)],
                                  composer.context(ITEM, msg), ITEM, MONDAY_10, msg)
        names = [p.get_filename() for p in email.message_from_bytes(mail.raw).walk() if p.get_filename()]
        assert names == ["quote.pdf"]

    def test_headers_are_the_bytes_compat32_folds_them_to(self, composer, monkeypatch):
        """Short plain headers skip the folding; every mail is still byte for byte what compat32 makes."""
        subject = "Drucker im 3. Stock druckt nur leere Seiten – bitte dringend prüfen, danke für die Hilfe " * 2
        thread = "".join(f" <{'x' * 30}{n}@example.org>" for n in range(12))
        msg = decode(make_mail("Zoë Müller <zoe@example.org>", subject, headers={"References": thread}))
        replies = [Reply("ack", (msg.sender,), acknowledges=True, automatic=True),
                   Reply("assigned", ("ana@example.org",), threaded=False, internal=True)]
        monkeypatch.setattr(mailout, "make_msgid", lambda idstring, domain: f"<1.{idstring}@{domain}>")
        item = replace(ITEM, subject=subject)
        fast = composer.compose(replies, composer.context(item, msg), item, MONDAY_10, msg)
        monkeypatch.setattr(mailout, "_WIRE", email.policy.compat32.clone(linesep="\r\n"))
        slow = composer.compose(replies, composer.context(item, msg), item, MONDAY_10, msg)
        assert [m.raw for m in fast] == [m.raw for m in slow]
        assert b"\r\n =?utf-8?" in fast[0].raw and b"\r\n <xxx" in fast[0].raw  # long headers were folded

    def test_the_wire_policy_folds_any_header_as_compat32_does(self):
        rng = random.Random(15)
        values = ["plain", "a" * 76, "a" * 77, " lead", "trail ", "tab\tinside", "two  spaces", "x\x0cy", "",
                  "line\nbreak", "ünïcode", "a@b.org, c@d.org", "surrogate \udcff", "; ,=" * 30]
        values += ["".join(rng.choice("ab ;,=<>@\t") for _ in range(rng.randint(0, 90))) for _ in range(3000)]
        compat = email.policy.compat32.clone(linesep="\r\n")
        for name in ("To", "Content-Type", "X-Inboxd-Ref"):
            assert [mailout._WIRE.fold_binary(name, v) for v in values] == [compat.fold_binary(name, v) for v in values]


class TestTracker:
    @pytest.fixture
    def tracker(self, config):
        open_database(config.database_url)
        return Tracker(config.mailbox.label)

    def _open(self, config, tracker) -> ItemView:
        msg = decode(make_mail())
        decision = Decision(None, Queue("default"), ())
        item, _ = tracker.open_item(intake.plan_new_item(config, msg, decision, None, (), MONDAY_10), msg, 1,
                                    MONDAY_10)
        return item

    def test_open_item_saves_the_planned_item_with_its_record_and_history(self, config, tracker):
        item = self._open(config, tracker)
        row = Item.get_by_id(item.id)
        assert (row.subject, row.status, row.secret) == (item.subject, "new", item.secret) and len(item.secret) >= 8
        assert Message.get(Message.item == item.id).outcome == "item"
        assert [e.kind for e in Event.select().where(Event.item == item.id)] == ["created"]

    def test_apply_writes_a_plan_as_it_is_and_returns_the_changed_item(self, config, tracker):
        item = self._open(config, tracker)
        later = MONDAY_10 + timedelta(hours=1)
        reply = decode(make_mail(sender="ana@example.org", subject=f"Re: [IT-{item.id}] x", body="#take\n#done"))
        plan = decide(config, item, reply, "#take\n#done", True, later)
        assert plan.kind == PlanKind.COMMAND
        with pytest.raises(TypeError):
            plan.changes["status"] = "open"  # type: ignore[index]  # a plan is not changed after it is built
        record = tracker.record_inbound(reply, 2, later, plan.kind, plan.summary, item.id)
        changed = tracker.apply(item, plan, record, later)
        row = Item.get_by_id(item.id)
        assert changed.status == row.status == "done" and row.owner == changed.owner == "ana@example.org"
        assert row.resolved_at == later.astimezone(UTC)

    def test_a_job_notice_is_claimed_once(self, config, tracker):
        item = self._open(config, tracker)
        due = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
        assert tracker.claim_notice("escalation", item.id, due, "", MONDAY_10)
        assert not tracker.claim_notice("escalation", item.id, due, "", MONDAY_10)

    def test_deliveries_are_reported_through_the_tracker(self, config, tracker):
        item = self._open(config, tracker)
        later = MONDAY_10 + timedelta(seconds=3)
        Tracker.delivered(item.id, True, "x@example.org: 550 no such user", "ack", later)
        Tracker.delivered(item.id, True, "", "ack", later + timedelta(seconds=5))  # the first one counts
        assert Item.get_by_id(item.id).acknowledged_at == later
        assert [e.kind for e in Event.select().where(Event.item == item.id).order_by(Event.id)][-1] == "delivery-failed"


@pytest.mark.parametrize("text", [
    "Hello,\n\nyour request is in.\n", "Größe über 42 — ok, 😀 = fine.\n", "a line with a trailing space \nnext\n",
    ".\nFrom here\n=3D\n", "word " * 40 + "\n", "x" * 200, "tab\tend\t\nCR\r\nalone\rhere", ""])
def test_a_text_part_decodes_to_what_mimetext_would_make(text):
    made = text_part(text, "plain")
    assert made.get_payload(decode=True) == MIMEText(text, "plain", _qp_utf8()).get_payload(decode=True)
    assert made["Content-Type"] == 'text/plain; charset="utf-8"'
    assert made["Content-Transfer-Encoding"] == "quoted-printable"
    assert all(len(line) <= 76 for line in made.as_bytes().split(b"\n"))


def test_a_line_binascii_would_make_too_long_is_encoded_by_the_email_package():
    text = "x" * 75 + " \nmore\n"  # binascii: 75 x and "=20", 78 characters
    assert max(map(len, binascii.b2a_qp(text.encode(), istext=True).split(b"\n"))) > 76
    assert text_part(text, "plain").as_bytes() == MIMEText(text, "plain", _qp_utf8()).as_bytes()


def _qp_utf8() -> Charset:
    charset = Charset("utf-8")
    charset.body_encoding = QP
    return charset
