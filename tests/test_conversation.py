"""Conversations on fakes: threading, relay, requester replies, ratings, reopening, and who may command."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from conversation_helpers import Conversation, reply, subjects, text_of
from helpers import make_mail, write_config

from inboxd.clock import FixedClock
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.models import Item, Message
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource


@pytest.fixture
def talk(fake_daemon) -> Conversation:
    return Conversation(fake_daemon)


def daemon_with(tmp_path: Path, clock: FixedClock, extra: str) -> Daemon:
    return Daemon(load_config(write_config(tmp_path, extra=extra)), clock=clock, source=FakeSource(),
                  transport=FakeTransport())


# --- threading -------------------------------------------------------------------------------

@pytest.mark.parametrize("subject", ["AW: [IT-1] Screen flickers", "Fwd: Re: [it-1] Screen flickers",
                                     "Screen [IT-1] still flickers", "SV: VS: Re:[IT-1]"])
def test_subject_tag_finds_the_item_whatever_the_prefix(talk, subject):
    talk.send(reply(talk.ack, "rosa@example.org", "Still flickering.", subject=subject, threaded=False))
    assert Item.select().count() == 1
    assert Message.get(Message.sender == "rosa@example.org", Message.outcome == "reply").item_id == 1


def test_changed_subject_threads_by_headers(talk):
    talk.send(reply(talk.ack, "rosa@example.org", "It is the cable, I think.", subject="cable?"))
    assert Item.select().count() == 1 and talk.events("reply")


@pytest.mark.parametrize("subject", ["Re: [IT-999] Screen flickers", "Re: [HR-1] Screen flickers"])
def test_tag_of_a_missing_item_or_another_team_is_a_new_request(talk, subject):
    sent = talk.send(make_mail("mallory@example.org", subject, "#done"))
    assert Item.select().count() == 2 and talk.item.status == "new"
    assert any("We have your request" in subject for _, subject in subjects(sent))
    assert "[IT-999]" not in Item.get_by_id(2).subject  # our own tag is not part of the new subject


# --- owner text and requester replies --------------------------------------------------------

def test_owner_text_is_relayed_with_attachments_and_counts_as_first_response(talk):
    assert talk.item.first_response_at is None  # the acknowledgement is not a response
    sent = talk.owner_says("#take\nHi Rosa, please try the other cable; the quote is attached.",
                           attachment=b"%PDF-1.4 quote")
    relay = next(m for m in sent if m["To"] == "rosa@example.org")
    assert relay["Subject"] == "[IT-1] Re: Screen flickers"
    assert relay["In-Reply-To"] == "<request-1@example.org>"
    assert "please try the other cable" in text_of(relay) and "wrote:" not in text_of(relay)
    (pdf,) = [p for p in relay.walk() if p.get_filename() == "quote.pdf"]
    assert pdf.get_payload(decode=True) == b"%PDF-1.4 quote"
    assert talk.item.first_response_at is not None


def test_quoted_keywords_are_never_executed(talk):
    talk.send(reply(talk.ack, "ana@example.org", "Looking into it.\n\n> #done\n> #decline no"))
    assert talk.item.status == "new" and not talk.events("command")


def test_requester_reply_goes_to_the_owner_or_the_queue(talk):
    sent = talk.requester_says("It also beeps.")
    assert sorted(m["To"] for m in sent) == ["ana@example.org", "bo@example.org"]
    assert "It also beeps." in text_of(sent[0]) and "wrote:" not in text_of(sent[0])
    talk.owner_says("#take")
    (forward,) = talk.requester_says("And now it smokes.")
    assert forward["To"] == "ana@example.org" and forward["Subject"].startswith("[IT-1] Reply from Rosa Lind")


def test_requester_reply_ends_waiting_on_them_but_not_on_others(talk):
    talk.owner_says("#take\n#waiting\nWhich model is it?")
    talk.requester_says("A Dell U2720Q.")
    assert (talk.item.status, talk.item.waiting_on) == ("open", None)
    talk.owner_says("#waiting on the vendor")
    talk.requester_says("Any news?")
    assert (talk.item.status, talk.item.waiting_on) == ("waiting", "the vendor")


def test_bare_rating_is_stored_not_a_reopen(talk):
    talk.owner_says("#take\n#done")
    assert talk.requester_says("4") == []
    assert (talk.item.satisfaction, talk.item.status) == (4, "done")


def test_a_rating_under_an_undated_attribution_is_a_rating(talk):
    talk.owner_says("#take\n#done")
    thanks = talk.last("rosa@example.org")
    quoted = "\n".join("> " + line for line in text_of(thanks).splitlines())
    answer = make_mail("rosa@example.org", f"Re: {thanks['Subject']}", f"4\n\nOn some day, Help wrote:\n{quoted}\n",
                       headers={"In-Reply-To": thanks["Message-ID"]})
    assert talk.send(answer) == []
    assert (talk.item.satisfaction, talk.item.status) == (4, "done")


@pytest.mark.parametrize("words, score", [("5", 5), ("4/5", 4), ("3 stars", 3), ("1 - nothing works, still broken", 1),
                                          ("5! Quick and friendly, thanks", 5)])
def test_rating_forms(talk, words, score):
    talk.owner_says("#done")
    talk.requester_says(words)
    assert (talk.item.satisfaction, talk.item.status) == (score, "done")


def test_low_rating_goes_to_the_lead_with_the_history(talk):
    talk.owner_says("#take\n#done")
    (to_lead,) = talk.requester_says("2/5 - took far too long")
    assert to_lead["To"] == "lead@example.org" and "rated IT-1 2 of 5" in text_of(to_lead)
    assert "#take: assigned to ana@example.org" in text_of(to_lead)  # the history came along
    assert talk.item.satisfaction == 2


@pytest.mark.parametrize("words", ["thanks!", "Thank you so much, works now :)", "Danke!"])
def test_thanks_does_not_reopen(talk, words):
    talk.owner_says("#done")
    assert talk.requester_says(words) == []
    assert talk.item.status == "done" and talk.events("thanks")


def test_new_substance_reopens_within_the_window(talk):
    talk.owner_says("#take\n#done")
    (forward,) = talk.requester_says("It started flickering again after the update. Can you look?")
    assert (talk.item.status, talk.item.resolved_at) == ("open", None)
    assert forward["To"] == "ana@example.org" and "Reopened" in forward["Subject"]


def test_after_the_window_a_reply_opens_a_new_item_that_links_the_old(talk, clock):
    talk.owner_says("#take\n#done")
    clock.advance(timedelta(days=6))  # reopen_window is 5 days
    sent = talk.requester_says("The same problem is back. Can you look again?")
    new = Item.get_by_id(2)
    assert talk.item.status == "done" and new.follows_id == 1 and new.subject == "Re: Done: Screen flickers"
    assert any("[IT-2] We have your request" in s for _, s in subjects(sent))


# --- who may command -------------------------------------------------------------------------

def test_secret_reply_address_is_required_when_enabled(tmp_path, clock):
    talk = Conversation(daemon_with(tmp_path, clock, "[commands]\nrequire_secret = true\n"))
    forwards = talk.requester_says("More details.")
    forward = next(m for m in forwards if m["To"] == "ana@example.org")
    secret = talk.secret_for("ana@example.org")
    assert forward["Reply-To"] == secret and len(secret.split("+it1.")[1].split("@")[0]) == 16  # 64 bits
    assert talk.ack["Reply-To"] == "help@example.org"  # the requester never sees the secret
    forged = talk.owner_says("#done", recipient="help@example.org")
    assert talk.item.status == "new" and "own reply address" in talk.events("refused")[0].detail
    assert "Not applied" in forged[0]["Subject"]
    talk.owner_says("#done", recipient=f"help+it1.{'0' * 16}@example.org")
    assert talk.item.status == "new" and len(talk.events("refused")) == 2
    talk.owner_says("#done", recipient=talk.secret_for("bo@example.org"))  # Bo's address is not Ana's
    assert talk.item.status == "new" and len(talk.events("refused")) == 3
    talk.owner_says("#done", recipient=secret)
    assert talk.item.status == "done"


def test_authentication_results_must_pass_when_configured(tmp_path, clock):
    talk = Conversation(daemon_with(tmp_path, clock, '[commands]\nauthserv_id = "mx.example.org"\n'))
    forged = {"Authentication-Results": "mx.example.org; dmarc=fail header.from=example.org"}
    elsewhere = {"Authentication-Results": "evil.example.net; dmarc=pass header.from=example.org"}
    talk.owner_says("#take", headers=forged)
    talk.owner_says("#take", headers=elsewhere)
    assert talk.item.owner is None and len(talk.events("refused")) == 2
    good = {"Authentication-Results": "mx.example.org; spf=pass smtp.mailfrom=example.org; "
                                      "dkim=pass header.d=example.org; dmarc=pass header.from=example.org"}
    talk.owner_says("#take", headers=good)
    assert talk.item.owner == "ana@example.org"


def test_a_member_who_filed_the_request_is_treated_as_its_requester(fake_daemon):
    talk = Conversation(fake_daemon, sender="bo@example.org")
    talk.owner_says("#take")
    (forward,) = talk.requester_says("Also the keyboard.")
    assert forward["To"] == "ana@example.org"


def test_html_only_reply_is_read_without_its_quote(talk):
    from email.message import EmailMessage
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "ana@example.org", talk.secret_for("ana@example.org"), \
        "Re: [IT-1] Screen flickers"
    mail["Message-ID"] = "<html-reply@example.org>"
    mail["In-Reply-To"] = talk.last("ana@example.org")["Message-ID"]  # the announcement: words go to Rosa
    mail.set_content('<div dir="ltr">#take<br>Rosa, I will come by at 3.</div><div class="gmail_quote">'
                     '<div class="gmail_attr">On Mon, 23 Nov 2026 at 10:00, IT Help &lt;help@example.org&gt; wrote:'
                     '</div><blockquote class="gmail_quote">#done<br>#decline no</blockquote></div>', subtype="html")
    sent = talk.send(mail.as_bytes())
    assert (talk.item.owner, talk.item.status) == ("ana@example.org", "open")
    relay = next(m for m in sent if m["To"] == "rosa@example.org")
    assert "Rosa, I will come by at 3." in text_of(relay) and "#done" not in text_of(relay)


@pytest.mark.parametrize("words", ["Thanks, but it is still broken.", "Thank you. It doesn't print at all now",
                                   "thanks - can you also check the scanner?"])
def test_thanks_with_news_reopens(talk, words):
    talk.owner_says("#take\n#done")
    talk.requester_says(words)
    assert talk.item.status == "open" and talk.events("reopened")


@pytest.mark.parametrize("words", ["10", "4.5", "3 printers are broken", "2 more questions: when? where?"])
def test_numbers_that_are_not_a_rating(talk, words):
    talk.owner_says("#take\n#done")
    talk.requester_says(words)
    assert talk.item.satisfaction is None and talk.item.status == "open"


def test_owner_writing_to_the_requester_directly_is_not_relayed_twice(talk):
    sent = talk.owner_says("#take\nRosa, see my mail.", headers={"Cc": "rosa@example.org"})
    assert [m["To"] for m in sent] == ["ana@example.org"] and talk.item.first_response_at is not None
    assert "wrote to rosa@example.org directly" in talk.events("answered")[0].detail


def test_waiting_on_the_requester_by_name(talk):
    talk.owner_says("#take\n#waiting on Rosa")
    assert talk.item.waiting_on == "requester"
    talk.requester_says("Here is the model: Dell U2720Q.")
    assert talk.item.status == "open"


def test_owner_attachment_without_text_still_reaches_the_requester(talk):
    sent = talk.owner_says("", attachment=b"%PDF-1.4 manual")
    relay = next(m for m in sent if m["To"] == "rosa@example.org")
    assert [p.get_filename() for p in relay.walk() if p.get_filename()] == ["quote.pdf"]
