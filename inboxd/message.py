"""InboundMessage: a raw mail decoded once by mail-parser into what every later step needs."""

from __future__ import annotations

import binascii
import hashlib
import logging
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr

import mailparser
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning

from .errors import MessageError

log = logging.getLogger(__name__)
logging.getLogger("mailparser").setLevel(logging.ERROR)  # it warns on every unusual MIME part
_MSGID = re.compile(r"<[^<>\s]+>")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_INVENTED_NAME = re.compile(r"[a-z]{10}\.(txt|rtf)")  # mail-parser names unnamed parts at random
# Message-IDs of our own mail quoted in a body: a bounce names the mail that failed this way.
_OUR_QUOTED_ID = re.compile(rb"<[\w.+-]+\.inboxd@[\w.-]+>", re.IGNORECASE)
QUOTED_SCAN_BYTES = 200_000  # a bounce quotes the failed mail's headers near its start
# Structured headers where "=?…?=" is data, not text (RFC 2047 5): decoding an Authentication-Results
# would let a MAIL FROM our server copied into it add results of its own.
_NOT_TEXT = frozenset({"authentication-results"})


@dataclass(frozen=True)
class Attachment:
    """A file attached to a mail."""

    name: str
    size: int
    content_type: str


@dataclass(frozen=True)
class InboundMessage:
    """A decoded incoming mail."""

    message_id: str
    sender: str
    sender_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    text: str
    attachments: tuple[Attachment, ...]
    headers: dict[str, tuple[str, ...]]  # lower-case name -> values, in order
    in_reply_to: str | None
    references: tuple[str, ...]
    content_type: str
    raw_size: int
    html: str = ""  # the HTML body, kept only when there is no plain text (to find quotes in a reply)
    cut_from: int = 0  # a huge mail of which only the start was read: its full size
    quoted_ids: tuple[str, ...] = ()  # Message-IDs of inboxd's own mail quoted in the body (bounces)
    # Decoded once, for the steps that pass the mail on: its files as MIME parts that can go into
    # another mail unchanged, and the original bytes for a redirect to attach.
    files: tuple[Message, ...] = field(default=(), repr=False, compare=False)
    original: bytes = field(default=b"", repr=False, compare=False)

    def header(self, name: str) -> str | None:
        """The first value of a header, or None."""
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def fingerprint(self) -> str:
        """A hash of what the sender wrote, without transport headers.

        Two copies of one mail (To and Cc both the alias) share it; two different mails that
        reuse a Message-ID, as some broken generators do, do not.
        """
        # Whitespace folded: servers may rewrite line endings (bare CR, LF) on APPEND.
        # Not the attachments: mail-parser names unnamed parts at random.
        # Only printable ASCII of the text: servers rewrite binary junk (Dovecot: NUL -> 0x80), and
        # decoding the rewritten bytes gives other characters, while what the person wrote stays put.
        text = _CONTROL.sub(b"", self.text.encode("ascii", "ignore")).decode("ascii")
        parts = [self.sender, self.subject, self.header("date") or "", " ".join(text.split())]
        return hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:32]

    @property
    def summary(self) -> str:
        """The first 200 characters of the text, on one line."""
        return " ".join(self.text.split())[:200]


def raw_key(raw: bytes) -> str:
    """A stable Message-ID for a mail that has none: a hash of its bytes as any server keeps them.

    Servers rewrite on APPEND: bare CR and LF become CRLF, and Dovecot turns NUL into 0x80.
    """
    canonical = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\0", b"\x80")
    return f"<{hashlib.sha256(canonical).hexdigest()[:40]}@inboxd.invalid>"


def decode(raw: bytes, cut_from: int = 0) -> InboundMessage:
    """Decode a raw mail (or its start, of `cut_from` bytes); MessageError when the parser cannot read it."""
    try:
        parsed = mailparser.parse_from_bytes(raw)
    except Exception as exc:  # mail-parser raises many kinds on broken input
        raise MessageError(f"cannot parse mail: {type(exc).__name__}: {exc}") from None
    email = parsed.message
    headers: dict[str, tuple[str, ...]] = {}
    for name, value in email.raw_items():
        key, text = name.lower(), _utf8(value)
        headers[key] = headers.get(key, ()) + (" ".join(text.split()) if key in _NOT_TEXT else _clean(text),)
    # No usable sender still makes an item (nothing is lost); it just can't be answered.
    sender_name, sender = _first_address(_raw(email, "from") or _raw(email, "sender"))
    ids = _MSGID.findall(headers.get("message-id", ("",))[0])
    in_reply_to = _MSGID.findall(headers.get("in-reply-to", ("",))[0])
    return InboundMessage(
        message_id=ids[0] if ids else raw_key(raw),
        sender=sender, sender_name=sender_name,
        to=_addresses(_raw(email, "to")), cc=_addresses(_raw(email, "cc")),
        subject=_clean(parsed.subject or ""),
        text=_text_of(parsed),
        html="" if "\n".join(parsed.text_plain).strip() else "\n".join(parsed.text_html),
        attachments=tuple(_attachment(a) for a in parsed.attachments),
        headers=headers,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=tuple(_MSGID.findall(" ".join(headers.get("references", ())))),
        content_type=email.get_content_type(),
        raw_size=cut_from or len(raw), cut_from=cut_from,
        quoted_ids=tuple(dict.fromkeys(q.decode() for q in _OUR_QUOTED_ID.findall(raw[:QUOTED_SCAN_BYTES])))[:20],
        files=_files(email), original=raw)


def _files(email: Message) -> tuple[Message, ...]:
    """The attached files of a mail, as MIME parts that can go into another mail unchanged."""
    return tuple(part for part in email.walk()
                 if not part.is_multipart() and part is not email
                 and (part.get_filename() or part.get_content_disposition() == "attachment"))


def _clean(value: str) -> str:
    """One line, RFC 2047 words decoded: no CR/LF survives into anything echoed into a header."""
    if "=?" in value:
        try:
            value = str(make_header(decode_header(value)))
        except (ValueError, LookupError, UnicodeError):
            pass  # keep the undecodable original rather than lose the header
    return " ".join(value.split())


def _raw(email: Message, name: str) -> tuple[str, ...]:
    """Undecoded values of an address header: decoding first would turn encoded commas into separators."""
    return tuple(_utf8(value) for header, value in email.raw_items() if header.lower() == name)


def _utf8(value: object) -> str:
    """A header as text; raw UTF-8 in it (RFC 6532, "jöhn@exämple.org") read as UTF-8, not lost."""
    text = str(value)
    try:
        return text.encode("ascii", "surrogateescape").decode("utf-8", "replace") if not text.isascii() else text
    except UnicodeEncodeError:  # already proper text
        return text


def _first_address(values: tuple[str, ...]) -> tuple[str, str]:
    for name, address in getaddresses(list(values)):
        if _usable(address):
            return _clean(name), address.strip().lower()
    for value in values:  # some broken mail has only a bare address
        name, address = parseaddr(value)
        if _usable(address):
            return _clean(name), address.strip().lower()
    return "", ""


def _usable(address: str) -> bool:
    """Something we could send an answer to: a local part, an @ and a domain ("@example.com" is not)."""
    local, at, domain = address.strip().rpartition("@")
    return bool(local and at and "." in domain and " " not in address.strip())


def _addresses(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(a.lower() for _, a in getaddresses(list(values)) if "@" in a)


def _text_of(parsed: mailparser.MailParser) -> str:
    plain = "\n".join(parsed.text_plain).strip()
    if plain:
        return plain
    html = "\n".join(parsed.text_html)
    return html_to_text(html) if html else ""


def readable_soup(html: str) -> BeautifulSoup:
    """An HTML body parsed, without the parts nobody reads (scripts, styles, the head)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "head"]):
        tag.decompose()
    return soup


def tidy_lines(lines: Iterable[str]) -> str:
    """Lines joined, each stripped, with at most one blank line between paragraphs."""
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.strip() for line in lines)).strip()


def html_to_text(html: str) -> str:
    """Readable text of an HTML body."""
    return tidy_lines(readable_soup(html).get_text("\n").splitlines())


def _attachment(part: dict) -> Attachment:
    payload = part.get("payload") or ""
    if part.get("binary"):
        try:
            size = len(binascii.a2b_base64(payload))
        except (binascii.Error, ValueError):
            size = len(payload) * 3 // 4
    else:
        size = len(payload.encode("utf-8", "replace"))
    content_type = str(part.get("mail_content_type") or "application/octet-stream")
    name = _clean(str(part.get("filename") or ""))
    if not name or _INVENTED_NAME.fullmatch(name):
        name = f"unnamed {content_type}"
    return Attachment(name=name, size=max(size, 0), content_type=content_type)


