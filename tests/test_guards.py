"""Guards: automatic, bulk, bounce and own mail are never answered."""

import pytest
from helpers import CORPUS, make_mail, manifest

from inboxd import guards
from inboxd.message import decode

ALIAS = "help@example.org"


@pytest.mark.parametrize("sender, headers, guard", [
    ("help@example.org", {}, "own-mail"),
    ("help+it42.k7@example.org", {}, "own-mail"),
    ("a@example.org", {"Auto-Submitted": "auto-replied"}, "auto-submitted"),
    ("a@example.org", {"X-Autoreply": "yes"}, "auto-submitted"),
    ("a@example.org", {"X-Auto-Response-Suppress": "All"}, "auto-submitted"),
    ("a@example.org", {"X-Auto-Response-Suppress": "DR, OOF, AutoReply"}, "auto-submitted"),
    ("a@example.org", {"Precedence": "bulk"}, "precedence"),
    ("a@example.org", {"Precedence": "list"}, "precedence"),
    ("a@example.org", {"List-Id": "<dev.lists.example.org>"}, "list"),
    ("a@example.org", {"Return-Path": "<>"}, "null-return-path"),
    ("MAILER-DAEMON@mx.example.org", {}, "system-sender"),
    ("postmaster@example.org", {}, "system-sender"),
    ("no-reply@shop.example.com", {}, "system-sender"),
])
def test_each_guard(sender, headers, guard):
    skip = guards.check(decode(make_mail(sender, headers=headers)), ALIAS)
    assert skip is not None and skip.guard == guard


def test_auto_submitted_no_is_a_person():
    assert guards.check(decode(make_mail(headers={"Auto-Submitted": "no"})), ALIAS) is None


def test_out_of_office_subject_without_headers():
    skip = guards.check(decode(make_mail(subject="Out of Office: back Monday")), ALIAS)
    assert skip is not None and skip.guard == "auto-subject"


def test_delivery_report_content_type():
    raw = (b"From: mail@example.org\r\nSubject: note\r\nContent-Type: multipart/report; "
           b"report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b--\r\n")
    assert guards.check(decode(raw), ALIAS).guard == "report"


def test_ordinary_request_passes():
    assert guards.check(decode(make_mail()), ALIAS) is None


def test_corpus_every_no_reply_is_caught_and_every_request_passes():
    wrong = []
    for path, expect in manifest().items():
        if path.split("/")[0] not in ("normal", "autoreply", "bounce", "list"):
            continue
        skip = guards.check(decode((CORPUS / path).read_bytes()), ALIAS)
        if (expect == "no_reply") != (skip is not None):
            wrong.append((path, expect, str(skip)))
    assert wrong == []


# Other helpdesks' acknowledgements and Outlook's localized auto-replies, as they arrive: no standard
# header, only their own marks or their subject. Answering them lets two machines talk for ever.
HELPDESKS = [
    ('"Printer desk via RT" <rt@vendor.example.com>', "[Vendor #1234] AutoReply: Toner",
     {"RT-Ticket": "Vendor #1234", "Managed-BY": "RT 5.0.3 (http://www.bestpractical.com/rt/)"}),
    ('"Printer desk via RT" <rt@vendor.example.com>', "[Vendor #1234] AutoReply: Toner", {}),
    ("support@otrs.example.com", "[Ticket#2026112310000123] Your request", {"X-OTRS-Loop": "yes"}),
    ("helpdesk@znuny.example.com", "[Ticket#2026112310000124] Your request", {"X-Loop": "yes"}),
    ("support@zammad.example.com", "Thanks for your inquiry (#31001)", {"X-Zammad-Ticket-ID": "17"}),
    ("jira@acme.atlassian.net", "[JIRA] (HELP-12) Printer", {"X-JIRA-FingerPrint": "a1b2c3"}),
    ("support@acme.zendesk.com", "[Acme] Re: Toner", {"X-Zendesk-From-Account-Id": "4f2a9c"}),
    ("support@acme.freshdesk.com", "Ticket Received - Toner", {"X-Freshdesk-Ticket-ID": "88"}),
    ("instance@service-now.com", "Incident INC0012345 -- opened on your behalf", {}),
    ("help@osticket.example.com", "Support Ticket Opened [#748201]", {"X-OSTicket-ID": "748201"}),
    ("support@vendor.example.com", "Your request #48211 has been received", {}),
    ("support@vendor.example.com", "[Case 55012] Case 55012 was created", {}),
]


@pytest.mark.parametrize("sender, subject, headers", HELPDESKS)
def test_another_helpdesk_is_never_answered(sender, subject, headers):
    skip = guards.check(decode(make_mail(sender, subject, "We have received your request.", headers=headers)), ALIAS)
    assert skip is not None and skip.guard in ("helpdesk", "auto-subject"), skip


@pytest.mark.parametrize("subject", [
    "Automatyczna odpowiedź: Drukarka", "Automatische Antwort: Drucker", "Réponse automatique : Imprimante",
    "Respuesta automática: Impresora", "Risposta automatica: Stampante", "Automatisch antwoord: Printer",
    "Automatiskt svar: Skrivare", "Автоматический ответ: Принтер", "自動応答: プリンター", "Automatisk svar: Printer",
    "Automaattinen vastaus: Tulostin", "Automatická odpověď: Tiskárna", "自动回复: 打印机",
])
def test_localized_auto_reply_subjects_without_headers(subject):
    skip = guards.check(decode(make_mail("ana.kowalska@example.pl", subject, "Jestem poza biurem.")), ALIAS)
    assert skip is not None and skip.guard == "auto-subject"


@pytest.mark.parametrize("subject", [
    "Fwd: Case 55012 was created", "The printer ticket 4411 from last week is still open",
    "Request for a new laptop", "Ticket machine in the lobby is broken", "Re: [IT-3] Screen flickers",
])
def test_colleagues_talking_about_tickets_are_requests(subject):
    assert guards.check(decode(make_mail("omar@example.org", subject, "Can you help?")), ALIAS) is None
