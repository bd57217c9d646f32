"""Issue 12 ("Never let in"), item 5, end to end: one mail with hundreds of keywords sends at most one mail to anyone.

A real IMAP server (Dovecot; pymap where absent), `inboxd once` in its own process and a real SMTP
capture, with the default config and with `[commands] require_secret = true`. The member answers
the Reply-To of inboxd's mail to the team, as a member must when the secret is required.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
from collections import Counter
from email.message import Message
from pathlib import Path

import pytest
from conversation_helpers import reply
from helpers import REPO, make_mail, write_config

from inboxd.commands import MAX_KEYWORDS
from inboxd.servers import append_messages

ROSA, ANA, BO = "rosa@example.org", "ana@example.org", "bo@example.org"
SECURE = "[commands]\nrequire_secret = true\n"


class Desk:
    """One inboxd config against the real servers: mail in, `inboxd once`, the mail it sent out."""

    def __init__(self, config: Path, mailbox, smtp) -> None:
        self.config, self.mailbox, self.smtp = config, mailbox, smtp
        self.seen = 0

    def deliver(self, raw: bytes) -> list[tuple[tuple[str, ...], Message]]:
        """Put one mail in the INBOX, run `inboxd once`; each mail the capture received since, with its envelope."""
        append_messages(self.mailbox, [raw])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        done = subprocess.run([sys.executable, "-m", "inboxd.cli", "--config", str(self.config), "once"],
                              capture_output=True, text=True, timeout=180, env=env)  # this tree's inboxd
        assert done.returncode == 0, done.stderr[-3000:]
        new = self.smtp.messages[self.seen:]
        self.seen += len(new)
        return [(tuple(m.rcpt_tos), email.message_from_bytes(m.data)) for m in new]

    def request(self) -> Message:
        """Rosa's request; the announcement to the queue (its Reply-To the item's secret address when on)."""
        sent = self.deliver(make_mail(f"Rosa Lind <{ROSA}>", "Screen flickers", "My screen flickers since Monday.",
                                      message_id="<flood-request@example.org>"))
        (announcement,) = [m for to, m in sent if ANA in to]
        return announcement


@pytest.fixture(params=["", SECURE], ids=["default", "require_secret"])
def desk(request, tmp_path, mailbox, smtp_capture) -> Desk:
    config = write_config(tmp_path, imap_port=mailbox.port, smtp_port=smtp_capture.port, imap_user=mailbox.user,
                          imap_password=mailbox.password, extra=request.param)
    return Desk(config, mailbox, smtp_capture)


def per_recipient(sent: list[tuple[tuple[str, ...], Message]]) -> Counter:
    """Envelope recipients: what the SMTP server was actually asked to deliver."""
    return Counter(address for to, _ in sent for address in to)


def subject_to(sent: list[tuple[tuple[str, ...], Message]], address: str) -> str:
    (mail,) = [m for to, m in sent if address in to]
    return str(mail["Subject"])


def eta_lines(count: int) -> str:
    return "\n".join(f"#eta +{hours}h the vendor is late ({hours})" for hours in range(80, 80 + count))


def assign_lines(count: int) -> str:
    """#assign ana, #assign bo, … : the last names bo when the count is even."""
    return "\n".join("#assign bo" if i % 2 else "#assign ana" for i in range(count))


def test_a_reply_with_500_eta_lines_sends_one_mail_to_its_sender_and_none_to_the_requester(desk):
    announcement = desk.request()
    sent = desk.deliver(reply(announcement, ANA, eta_lines(500) + "\nHi Rosa, sorry for the wait."))
    assert per_recipient(sent) == {ANA: 1}
    assert "Not applied" in subject_to(sent, ANA)
    refusal = sent[0][1].get_payload(decode=True).decode()
    assert f"500 keywords in one mail: at most {MAX_KEYWORDS} are accepted" in refusal
    # As many as allowed: the requester gets one new date, the member one confirmation.
    sent = desk.deliver(reply(sent[0][1], ANA, eta_lines(MAX_KEYWORDS)))
    assert per_recipient(sent) == {ROSA: 1, ANA: 1}
    assert "New date" in subject_to(sent, ROSA) and "Applied" in subject_to(sent, ANA)


def test_a_reply_with_500_alternating_assign_lines_sends_at_most_one_mail_to_anyone(desk):
    announcement = desk.request()
    sent = desk.deliver(reply(announcement, ANA, assign_lines(500)))
    assert per_recipient(sent) == {ANA: 1} and "Not applied" in subject_to(sent, ANA)
    sent = desk.deliver(reply(sent[0][1], ANA, assign_lines(MAX_KEYWORDS)))
    assert per_recipient(sent) == {ANA: 1, BO: 1}  # bo, the final owner, is told once
    assert "Assigned to you" in subject_to(sent, BO)
    again = desk.deliver(reply(sent[0][1], ANA, assign_lines(MAX_KEYWORDS)))  # away from bo and back
    assert per_recipient(again) == {ANA: 1}


def test_a_megabyte_of_keyword_lines_is_refused_in_one_mail(desk):
    announcement = desk.request()
    sent = desk.deliver(reply(announcement, ANA, "#eta friday the vendor is late\n" * 33_000))
    assert per_recipient(sent) == {ANA: 1} and "Not applied" in subject_to(sent, ANA)
