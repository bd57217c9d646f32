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
