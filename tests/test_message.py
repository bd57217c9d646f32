"""Decoding raw mail into InboundMessage."""

from helpers import CORPUS, make_mail

from inboxd.message import decode, html_to_text, raw_key


def test_plain_request():
    msg = decode(make_mail("Rosa Lind <Rosa@Example.org>", "Screen", "It flickers.", "<a@b>"))
    assert (msg.sender, msg.sender_name, msg.message_id) == ("rosa@example.org", "Rosa Lind", "<a@b>")
    assert msg.text.strip() == "It flickers."
    assert msg.to == ("help@example.org",)


def test_rfc2047_subject_and_name_are_decoded():
    raw = (b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.org>\r\n"
           b"Subject: =?iso-8859-1?q?Dr=FCcker_kaputt?=\r\nMessage-ID: <x@y>\r\n\r\nHallo\r\n")
    msg = decode(raw)
    assert msg.subject == "Drücker kaputt"
    assert msg.sender_name == "Jürgen Müller"


def test_html_only_mail_becomes_text():
    raw = (b"From: a@example.org\r\nSubject: hi\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           b"<html><head><style>p{color:red}</style></head><body><p>Printer <b>broken</b></p>"
           b"<p>Floor 3</p><script>x()</script></body></html>\r\n")
    text = decode(raw).text
    assert "Printer" in text and "broken" in text and "Floor 3" in text
    assert "color" not in text and "x()" not in text and "<" not in text


def test_attachments_have_names_and_sizes():
    from email.message import EmailMessage
    mail = EmailMessage()
    mail["From"], mail["Subject"] = "a@example.org", "log attached"
    mail.set_content("see log")
    mail.add_attachment(b"x" * 3000, maintype="application", subtype="octet-stream", filename="trace.log")
    msg = decode(mail.as_bytes())
    assert [(a.name, a.size) for a in msg.attachments] == [("trace.log", 3000)]


def test_missing_message_id_gets_a_stable_hash():
    raw = b"From: a@example.org\r\nSubject: no id\r\n\r\nbody\r\n"
    assert decode(raw).message_id == decode(raw).message_id == raw_key(raw)
    assert decode(raw + b"more").message_id != raw_key(raw)


def test_no_sender_and_header_injection_flattened():
    raw = b"Subject: =?utf-8?q?evil=0D=0ABcc=3A_x=40y?=\r\n\r\nbody\r\n"
    msg = decode(raw)
    assert msg.sender == ""
    assert "\n" not in msg.subject and "\r" not in msg.subject


def test_threading_headers():
    msg = decode(make_mail(headers={"In-Reply-To": "<p@x>", "References": "<o@x> <p@x>"}))
    assert msg.in_reply_to == "<p@x>" and msg.references == ("<o@x>", "<p@x>")


def test_html_to_text_keeps_blocks_apart():
    assert html_to_text("<div>one</div><div>two</div>").splitlines() == ["one", "two"]


def test_unnamed_attachment_gets_a_stable_label():
    raw = (b"From: a@example.org\r\nSubject: fwd\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
           b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nlog line\r\n--b--\r\n")
    assert [a.name for a in decode(raw).attachments] == ["unnamed text/plain"]
    assert decode(raw).attachments == decode(raw).attachments


def test_raw_utf8_headers_are_read_as_utf8():
    msg = decode((CORPUS / "encoding" / "mikel__rfc6532_utf8_headers.eml").read_bytes())
    assert (msg.sender, msg.sender_name, msg.to, msg.subject) == \
        ("jdöe@mächine.example", "Jöhn Doe", ("märy@exämple.net",), "Säying Hello")


def test_control_characters_in_a_subject_are_never_echoed():
    raw = (b"From: rosa@example.org\r\nTo: help@example.org\r\nSubject: nul\x00here =?utf-8?b?AAAA?= end\r\n"
           b"Message-ID: <nul@example.org>\r\n\r\nPlease help.\r\n")
    msg = decode(raw)
    assert "\x00" not in msg.subject and msg.subject.startswith("nul here")
