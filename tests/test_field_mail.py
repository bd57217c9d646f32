"""Mail the field really sends (issue "never loop, never stall, never drop"), on Dovecot and aiosmtpd.

So far: other helpdesks' acknowledgements and localized auto-replies are kept, never answered.
"""

from __future__ import annotations

import pytest
from helpers import make_mail
from test_guards import HELPDESKS
from test_security import Mailroom

from inboxd.models import Message


@pytest.fixture
def room(tmp_path, mailbox, smtp_capture) -> Mailroom:
    return Mailroom(tmp_path, mailbox, smtp_capture)


def test_helpdesks_and_auto_replies_get_no_answer_and_are_kept_with_the_reason(room):
    mails = [make_mail(sender, subject, "We have received your request.", headers=headers)
             for sender, subject, headers in HELPDESKS]
    mails += [make_mail("ana.kowalska@example.pl", subject, "Jestem poza biurem do poniedziałku.")
              for subject in ("Automatyczna odpowiedź: Drukarka", "Автоматический ответ: Принтер", "自動応答: 印刷")]
    sent = room.run(*mails)
    assert sent == []  # not one answer, not one announcement
    skipped = Message.select().where((Message.direction == "in") & (Message.outcome == "skipped"))
    assert skipped.count() == len(mails) and all(m.reason for m in skipped)
    forwarded = room.run(make_mail("omar@example.org", "Fwd: Case 55012 was created", "Can you look at this?"))
    assert any(m["To"] == "omar@example.org" for m in forwarded)  # a colleague's forward is a request: acknowledged
