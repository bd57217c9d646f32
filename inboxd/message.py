"""InboundMessage: a raw mail decoded once by mail-parser into what every later step needs."""

from __future__ import annotations

import binascii
import copy
import email as stdlib_email
import functools
import hashlib
import logging
import mimetypes
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email import _header_value_parser as rfc5322  # the stdlib's strict parser (email.headerregistry's)
from email.encoders import encode_base64
from email.errors import NonASCIILocalPartDefect
from email.header import decode_header, make_header
from email.message import Message
from email.mime.base import MIMEBase
from typing import TYPE_CHECKING

import mailparser

from .errors import MessageError

if TYPE_CHECKING:  # bs4 is imported when an HTML mail needs it: it costs a tenth of a second of every start
    from bs4 import BeautifulSoup

log = logging.getLogger(__name__)
logging.getLogger("mailparser").setLevel(logging.ERROR)  # it warns on every unusual MIME part
_MSGID = re.compile(r"<[^<>\s]+>")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HEADER_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")  # the first blank line, in any line endings
# In text these are binary data read as text: controls (not tab or line ends) and bytes no charset read.
_UNREADABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")
_STRAY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # never pasted into mail, even a few
UNREADABLE_TEXT = "(The text of this mail could not be read: it is not text. It is listed as a file, as it came.)"
_INVENTED_NAME = re.compile(r"[a-z]{10}\.(txt|rtf)")  # mail-parser names unnamed parts at random
# Message-IDs of our own mail quoted in a body: a bounce names the mail that failed this way.
_OUR_QUOTED_ID = re.compile(rb"<[\w.+-]+\.inboxd@[\w.-]+>", re.IGNORECASE)
QUOTED_SCAN_BYTES = 200_000  # a bounce quotes the failed mail's headers near its start
# Address headers are read within bounds: the strict parser is quadratic in the worst case, and
# only the first addresses of a header matter (a 100,000-address Cc must not stall the intake).
MAX_ADDRESSES = 50  # of each of To and Cc
ADDRESS_CHARS = 4096  # of each of To and Cc, cut at a comma: an address cut short is not read
FROM_CHARS = 2000  # a longer From is not one plain address
_BOUNDED_HEADERS = ("from", "sender", "to", "cc", "bcc", "reply-to", "delivered-to")  # mail-parser reads these
# Every other header is read within bounds too: a 100 kB Subject of tags, 20,000 Received lines or 50,000
# encoded words cost mail-parser seconds each, and nothing after a header's start matters.
HEADER_CHARS = 8192  # of one header's value, cut at white space; References keep their end (the latest ids)
SAME_HEADERS = 50  # values of one header: the first (newest) Received lines are the ones worth reading
HEADER_BLOCK_CHARS = 128 * 1024  # of the whole header block; real ones are a few kB, signatures and all
# In a display name or comment these make it look like (another) address, or break a header line.
_MISLEADING = re.compile(r"[@<>\x00-\x1f\x7f]")
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
    sender: str  # the one address the From names, lower-cased; "" when it names no one clearly
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
    sender_problem: str = ""  # why `sender` is "": the From is missing, ambiguous or unusable
    body_hash: str = ""  # of every byte after the header block, text and files (see `body_hash`)

    @property
    def sender_ambiguous(self) -> bool:
        """The From names no one address we can be sure of: no acknowledgement, no commands."""
        return bool(self.sender_problem)

    def header(self, name: str) -> str | None:
        """The first value of a header, or None."""
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def fingerprint(self) -> str:
        """A hash of the mail as its sender wrote it: sender, subject, Date and the whole body, text and files.

        Two copies of one mail (To and Cc both the alias) share it: only their transport headers differ.
        Two mails that reuse a Message-ID (scanners, monitoring, mail merges) do not, whatever byte differs.
        """
        parts = [self.sender, self.subject, self.header("date") or "", self.body_hash]
        return hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:40]

    @property
    def old_fingerprint(self) -> str:
        """The fingerprint records made before this one carry: sender, subject, Date and the text's printable ASCII.

        A mail recorded under it is still recognised when read again (a folder recreated), not made an item twice.
        """
        text = _CONTROL.sub(b"", self.text.encode("ascii", "ignore")).decode("ascii")
        parts = [self.sender, self.subject, self.header("date") or "", " ".join(text.split())]
        return hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:32]

    @property
    def summary(self) -> str:
        """The first 200 characters of the text, on one line."""
        return " ".join(self.text.split())[:200]


def raw_key(raw: bytes) -> str:
    """A stable Message-ID for a mail that has none: a hash of its bytes as any server keeps them."""
    return f"<{hashlib.sha256(_canonical(raw)).hexdigest()[:40]}@inboxd.invalid>"


def body_hash(raw: bytes, cut_from: int = 0) -> str:
    """A hash of a mail's body (every byte after the header block: text and files) as any server keeps it.

    Of a huge mail read in part (its header and the body's start), the start read and the whole body's size:
    both are the same in every copy, however long the copies' headers. A mail without a blank line is all key.
    """
    end = _HEADER_END.search(raw)
    body = raw[end.end():] if end else raw
    size = f"{cut_from - (len(raw) - len(body))} bytes".encode() if cut_from else b""
    return hashlib.sha256(_canonical(body) + size).hexdigest()


def _canonical(raw: bytes) -> bytes:
    """Bytes as any server keeps them: on APPEND bare CR and LF become CRLF, and Dovecot turns NUL into 0x80."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\0", b"\x80")


def decode(raw: bytes, cut_from: int = 0) -> InboundMessage:
    """Decode a raw mail (or its start, of `cut_from` bytes); MessageError when the parser cannot read it."""
    try:
        whole = stdlib_email.message_from_bytes(raw)
        sender, sender_name, sender_problem = read_sender(_raw(whole, "from") or _raw(whole, "sender"))
        to, cc = read_recipients(_raw(whole, "to")), read_recipients(_raw(whole, "cc"))
        email = _bounded(whole)
        parsed = mailparser.MailParser(_body_view(email))
    except Exception as exc:  # mail-parser raises many kinds on broken input
        raise MessageError(f"cannot parse mail: {type(exc).__name__}: {exc}") from None
    values: dict[str, list[str]] = {}
    for name, value in email.raw_items():
        key, text = name.lower(), _utf8(value)
        values.setdefault(key, []).append(" ".join(text.split()) if key in _NOT_TEXT else _clean(text))
    headers = {key: tuple(texts) for key, texts in values.items()}
    ids = _MSGID.findall(headers.get("message-id", ("",))[0])
    message_id = ids[0] if ids else raw_key(raw)
    if email is not whole:
        log.info("%s: headers cut to their bounds for reading, %d of %d fields kept; the mail stays whole on the "
                 "server", message_id, len(email), len(whole))
    if sender_problem:  # the reason only, never the header: that is the sender's own text
        log.info("%s: no sender taken from %s: tracked, not answered, no commands", message_id, sender_problem)
    in_reply_to = _MSGID.findall(headers.get("in-reply-to", ("",))[0])
    binary = not all(is_text(t) for t in (*parsed.text_plain, *parsed.text_html))  # text that is not text
    loose = _loose_files(email, binary)
    return InboundMessage(
        message_id=message_id,
        sender=sender, sender_name=sender_name, sender_problem=sender_problem, to=to, cc=cc,
        subject=_clean(parsed.subject or ""),
        text=_text_of(parsed, binary),
        html="" if any(t.strip() and is_text(t) for t in parsed.text_plain) else _html_of(parsed),
        attachments=tuple(_attachment(a) for a in parsed.attachments) + tuple(_loose(f) for f in loose),
        headers=headers,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=tuple(_MSGID.findall(" ".join(headers.get("references", ())))),
        content_type=email.get_content_type(),
        raw_size=cut_from or len(raw), cut_from=cut_from,
        quoted_ids=tuple(dict.fromkeys(q.decode() for q in _OUR_QUOTED_ID.findall(raw[:QUOTED_SCAN_BYTES])))[:20],
        files=_files(email) + tuple(loose), original=raw, body_hash=body_hash(raw, cut_from))


def _body_view(email: Message) -> Message:
    """The mail as mail-parser sees it: its Subject and MIME headers, the same parts, nothing else.

    What inboxd takes from mail-parser is the subject, the text, the HTML and the files; its own reading
    of From, To, Received and Date (decode reads those itself) was a third of its time.
    """
    view = copy.copy(email)  # the same payload and parts: nothing is parsed or decoded again
    view._headers = [(name, value) for name, value in email.raw_items()  # type: ignore[attr-defined]
                     if name.lower() == "subject" or name.lower().startswith(("content-", "mime-"))]
    return view


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
    return " ".join(_STRAY.sub(" ", value).split())  # no NUL either: SMTP and PostgreSQL refuse it


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


def _bounded(email: Message) -> Message:
    """The mail with its header block within bounds, for mail-parser and every later step; itself if it is.

    At most SAME_HEADERS values of each header, each of at most HEADER_CHARS (address headers: ADDRESS_CHARS,
    cut at a comma), and no more than HEADER_BLOCK_CHARS in all: the fields after that are left out.
    """
    fields: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    total, cut = 0, False
    for name, value in email.raw_items():
        key, text = name.lower(), _unfold(str(value))  # measured on one line: the same in LF and CRLF copies
        counts[key] = counts.get(key, 0) + 1
        short = _shortened(key, text)
        if counts[key] > SAME_HEADERS or total + len(name) + len(short) > HEADER_BLOCK_CHARS:
            cut = True
            continue
        cut = cut or short is not text
        total += len(name) + len(short)
        fields.append((name, short))
    if not cut:
        return email
    bounded = Message()
    for name, short in fields:
        bounded.set_raw(name, short)
    bounded.set_payload(email.get_payload())  # the same parts: the body is not read again
    bounded.preamble, bounded.epilogue, bounded.defects = email.preamble, email.epilogue, email.defects
    return bounded


def _shortened(name: str, value: str) -> str:
    """A header's value within its bound, cut at a comma (addresses) or white space; the value itself if short."""
    if name in _BOUNDED_HEADERS:
        return _cut(value) if len(value) > ADDRESS_CHARS else value
    if len(value) <= HEADER_CHARS:
        return value
    if name == "references":  # the newest ids are last
        return value[-HEADER_CHARS:].split(None, 1)[-1]
    return value[:HEADER_CHARS].rsplit(None, 1)[0]


def _cut(value: str) -> str:
    """At most ADDRESS_CHARS of a header, ending before a comma: the last whole address stays whole."""
    if len(value) <= ADDRESS_CHARS:
        return value
    return value[:value.rfind(",", 0, ADDRESS_CHARS) + 1].rstrip(",")


def _unfold(value: str) -> str:
    """A header value on one line (RFC 5322 unfolding): line breaks before white space removed."""
    return re.sub(r"(\r\n|\r|\n)(?=[ \t])", "", value)


def _address_list(value: str) -> rfc5322.AddressList | None:
    """The strict parser's reading of an address header, or None when it cannot read it all."""
    try:
        addresses, rest = rfc5322.get_address_list(value)
    except Exception:  # the parser's own bugs (IndexError, AttributeError) and deep nesting (RecursionError)
        return None
    return None if rest.strip() else addresses


def read_sender(values: tuple[str, ...]) -> tuple[str, str, str]:
    """(address, name, problem) of a From (or Sender): one clean mailbox, or no address and why not.

    The rule: exactly one From header holding exactly one mailbox (no group, no list) that the
    strict parser reads with no defect outside its display name (raw UTF-8 in the local part,
    RFC 6532, is allowed); its display name and comments, decoded, hold no `@`, `<`, `>` or control
    character other than in a copy of the address itself; and the address is one we could answer
    (an unquoted local part, a dotted domain name). Anything else names no one we can be sure of.
    """
    if not values:
        return "", "", "no From line"
    if len(values) > 1:
        return "", "", f"{len(values)} From lines"
    value = _unfold(values[0])
    if len(value) > FROM_CHARS:
        return "", "", f"a From line of {len(value)} characters"
    return _sender(value)


@functools.lru_cache(maxsize=1024)  # at most 2 MB: FROM_CHARS each
def _sender(value: str) -> tuple[str, str, str]:
    """`read_sender` of one From line within bounds; kept, as a requester writes again and again."""
    parsed = _address_list(value)
    if parsed is None:
        return "", "", "a From line the strict parser cannot read"
    if parsed.defects:  # e.g. an empty element ("a@b.org, "): the list itself is not clean
        return "", "", "a From line with parse defects"
    if len(parsed.addresses) != 1:
        return "", "", "a From line with several addresses" if parsed.addresses else "a From line with no address"
    address = parsed.addresses[0]
    if address[0].token_type == "group":
        return "", "", "a From line with a group"
    (mailbox,) = address.all_mailboxes
    clean, problem = _answerable(mailbox)
    if problem:
        return "", "", f"a From line with {problem}"
    return clean.lower(), _name_of(mailbox), ""


def read_recipients(values: tuple[str, ...]) -> tuple[str, ...]:
    """The clean addresses among the first MAX_ADDRESSES of an address header (To, Cc), read like a From."""
    return _recipients(_cut(_unfold(", ".join(values))))


@functools.lru_cache(maxsize=256)  # at most 1 MB: ADDRESS_CHARS each
def _recipients(value: str) -> tuple[str, ...]:
    """`read_recipients` of one header's text within bounds; kept, as most mail names the team the same way."""
    parsed = _address_list(value)
    if parsed is None:
        return ()
    mailboxes = [m for address in parsed.addresses for m in address.all_mailboxes][:MAX_ADDRESSES]
    return tuple(dict.fromkeys(clean.lower() for clean, problem in map(_answerable, mailboxes) if not problem))


def _answerable(mailbox: rfc5322.TokenList) -> tuple[str, str]:
    """(address, "") of one parsed mailbox that is one clear address we could answer, or ("", why not)."""
    # A Mailbox of one name-addr or addr-spec; the parser calls it invalid for any defect, also one in
    # the display name alone ("=?…?=" in quotes), which the rules below judge. Junk after it is not allowed.
    if not isinstance(mailbox, rfc5322.Mailbox) or len(mailbox) != 1 \
            or mailbox[0].token_type not in ("name-addr", "addr-spec"):
        return "", "an invalid address"
    if any(not isinstance(d, NonASCIILocalPartDefect) for d in _defects_outside_name(mailbox)):
        return "", "parse defects in the address"
    address = mailbox.addr_spec or ""
    for label in (_display_text(mailbox), *mailbox.comments):
        if _MISLEADING.search(label) and _MISLEADING.search(_without_copies(label, address)):
            return "", "an address, '<', '>' or a line break in its display name or a comment"
    local, _, domain = address.rpartition("@")
    if not local or local.startswith('"') or "." not in domain or domain.startswith("[") \
            or any(c.isspace() for c in address):
        return "", "an address we could not answer"
    return address, ""


def _without_copies(label: str, address: str) -> str:
    """A label without whole copies of the address ("Rosa <rosa@example.org>" may name it again)."""
    # Compiled only for a label that looks misleading at all: one pattern per sender would cost more than the mail.
    own = re.compile(rf"(?<![\w.+-])<?\s*{re.escape(address)}\s*>?(?![\w.-])", re.IGNORECASE)
    return own.sub("", label)


def _defects_outside_name(token: rfc5322.TokenList) -> Iterator[Exception]:
    """The parse defects of a token and its parts, but not of a display name (only a label, checked apart)."""
    if token.token_type == "display-name":
        return
    yield from token.defects
    for part in token:
        if isinstance(part, rfc5322.TokenList):
            yield from _defects_outside_name(part)
        else:
            yield from part.defects


def _display_text(mailbox: rfc5322.TokenList) -> str:
    """The decoded display name; white space between two encoded words dropped (RFC 2047 6.2).

    The stdlib keeps it, so a long name split over two words would read "Jürgen Müll er".
    """
    first = mailbox[0]
    names = [t for t in first if isinstance(t, rfc5322.TokenList) and t.token_type == "display-name"] \
        if isinstance(first, rfc5322.TokenList) and first.token_type == "name-addr" else []
    text, space, last_word = "", False, None
    for leaf, word in _leaves(names[0], None) if names else ():
        if leaf.token_type == "fws":
            space = True
            continue
        if space and text and (word is None or last_word is None or word is last_word):
            text += " "
        text, space, last_word = text + str(leaf), False, word
    return text


def _leaves(token: rfc5322.TokenList, word: rfc5322.TokenList | None
            ) -> Iterator[tuple[rfc5322.Terminal, rfc5322.TokenList | None]]:
    """The terminals of a display name, each with the encoded word it is part of (None); comments left out."""
    for part in token:
        if isinstance(part, rfc5322.Terminal):
            yield part, word
        elif isinstance(part, rfc5322.TokenList) and part.token_type != "comment":
            yield from _leaves(part, part if part.token_type == "encoded-word" else word)


def _name_of(mailbox: rfc5322.TokenList) -> str:
    """The display name on one line (or an old-style comment name: "rosa@example.org (Rosa Lind)")."""
    return " ".join((_display_text(mailbox) or " ".join(mailbox.comments)).split())


def _text_of(parsed: mailparser.MailParser, binary: bool) -> str:
    """The mail's text: its plain parts, else its HTML; parts that are not text left out, stray controls too."""
    plain = "\n".join(t for t in parsed.text_plain if is_text(t)).strip()
    if "\x1b" in plain:  # mail-parser leaves 7-bit iso-2022-jp as escape sequences; the stdlib decodes it
        plain = _stdlib_plain(parsed.message) or plain
    html = _html_of(parsed)
    text = _STRAY.sub("", plain or (html_to_text(html) if html else "")).strip()
    return UNREADABLE_TEXT if binary and not text else text


def _html_of(parsed: mailparser.MailParser) -> str:
    return "\n".join(t for t in parsed.text_html if is_text(t))


def is_text(text: str) -> bool:
    """False for data that is not text though it was read as text (an Outlook .msg, a PDF, UTF-16)."""
    return len(_UNREADABLE.findall(text)) * 4 <= len(text)


def _stdlib_plain(email: Message) -> str:
    """The text/plain parts (not attachments) decoded by their own charset."""
    texts = []
    for part in email.walk():
        if part.get_content_type() != "text/plain" or part.get_content_disposition() == "attachment":
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            try:
                texts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
            except LookupError:  # a charset Python does not know: keep mail-parser's reading
                return ""
    return "\n".join(t for t in texts if is_text(t)).strip()


def _loose_files(email: Message, binary: bool) -> list[Message]:
    """Parts that are files though neither named nor attached: mail-parser would drop them unseen.

    A part declared as an application, image, audio or video type (the whole mail, say, when an
    Outlook .msg is sent as the body), or, when mail-parser read `binary` text, a text part whose
    bytes are not text.
    """
    loose = []
    for part in email.walk():
        if part.is_multipart() or part.get_filename() or part.get_content_disposition() == "attachment" \
                or part.get("content-id") or part.get_content_subtype().endswith("signature"):
            continue
        if part.get_content_maintype() in ("application", "image", "audio", "video"):
            loose.append(_as_file(part, part.get_content_type()))
        elif binary and part.get_content_type() in ("text/plain", "text/html") and _is_binary(part):
            loose.append(_as_file(part, "application/octet-stream"))
    return loose


def _is_binary(part: Message) -> bool:
    """A text part whose bytes are not text, read by its charset or as UTF-8 (charsets are often named wrong)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return False
    try:
        declared = payload.decode(part.get_content_charset() or "utf-8", "replace")
    except LookupError:
        declared = ""
    return not is_text(declared) and not is_text(payload.decode("utf-8", "replace"))


def _as_file(part: Message, content_type: str) -> Message:
    """A part's bytes as a new attachment: never the part itself, which may be the whole mail with its headers."""
    payload = part.get_payload(decode=True)
    file = MIMEBase(*content_type.split("/", 1))
    file.set_payload(payload if isinstance(payload, bytes) else b"")
    encode_base64(file)
    file.add_header("Content-Disposition", "attachment",
                    filename=f"unnamed{mimetypes.guess_extension(content_type) or '.bin'}")
    return file


def readable_soup(html: str) -> BeautifulSoup:
    """An HTML body parsed, without the parts nobody reads (scripts, styles, the head)."""
    from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning
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


def _loose(file: Message) -> Attachment:
    """How a loose file is listed (`unnamed application/vnd.ms-outlook`, 156.2 kB)."""
    payload = file.get_payload(decode=True)
    content_type = file.get_content_type()
    return Attachment(f"unnamed {content_type}", len(payload) if isinstance(payload, bytes) else 0, content_type)


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


