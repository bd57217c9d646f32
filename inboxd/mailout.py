"""Outgoing mail: template contexts, and the composer that turns replies into RFC 5322 messages.

Composing (render, headers, threading, attachments) writes nothing: the caller puts the result
in the outbox inside its own transaction.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.mime.text import MIMEText
from email.policy import SMTPUTF8, Compat32
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any

from .domain import ItemView, Reply
from .message import InboundMessage
from .render import Rendered, Renderer
from .routing import Disposition
from .settings import Config, TeamConfig
from .threads import secret_address

# The classic MIME classes build mail five times faster than EmailMessage; readable QP bodies.
_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP


class _Wire(Compat32):
    """compat32 on the wire, a short plain header written as it is: the bytes compat32 folds it to, without the fold.

    Folding (email.header) cost more than the rest of building a mail: ten headers a mail, each through
    `Header.encode`, though nearly all of them fit on one line as they are.
    """

    def fold_binary(self, name: str, value: Any) -> bytes:
        if isinstance(value, str) and len(name) + len(value) <= _ONE_LINE and value.isascii() and name.isascii() \
                and _PLAIN.fullmatch(value):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_ONE_LINE = 76  # compat32's 78 characters a line, less ": "
_PLAIN = re.compile(r"[!-~](?:[ -~]*[!-~])?")  # printable ASCII, spaces only inside: nothing compat32 would change
_WIRE = _Wire(linesep="\r\n")
_WIRE_UTF8 = SMTPUTF8.clone(linesep="\r\n")  # jöhn@exämple.org must stay as it is (RFC 6532), not be encoded
MAX_SUBJECT = 200  # characters: SMTP lines end at 998 bytes, and no reader wants more


@dataclass(frozen=True)
class OutgoingMail:
    """A mail ready for the outbox, with what its sending means."""

    kind: str
    sender: str
    to: tuple[str, ...]
    subject: str
    message_id: str
    raw: bytes
    text: str = ""  # the rendered text, kept for `inboxd item`
    acknowledges: bool = False  # sending it sets the item's acknowledged_at
    automatic: bool = False  # an automatic answer to a sender: the flood cap counts it


def status_text(item: ItemView, owner_name: str) -> str:
    """Where an item stands, in words a requester understands."""
    who = owner_name or "the team"
    return {"new": "in the queue, waiting for someone on the team to take it",
            "open": f"with {who}", "working": f"being worked on by {who}",
            "waiting": f"waiting on {'you' if item.waiting_on in (None, 'requester') else item.waiting_on}",
            "done": "done", "declined": "declined", "redirected": "handed over to another team"}.get(item.status,
                                                                                                 item.status)


def item_context(item: ItemView, team: TeamConfig) -> dict[str, Any]:
    """What templates may say about an item."""
    owner = team.member(item.owner) if item.owner else None
    owner_name = owner.name if owner else (item.owner or "")
    return {
        "ref": team.ref(item.id), "subject": item.subject, "requester": item.requester,
        "requester_name": item.requester_name or item.requester.split("@")[0],
        "owner": item.owner, "owner_name": owner_name,
        "queue": item.queue, "status": str(item.status), "priority": str(item.priority),
        "tags": list(item.tags or []), "created_at": item.created_at, "due_at": item.due_at,
        "requested_due_at": item.requested_due_at, "waiting_on": item.waiting_on or "",
        "on_track": bool(item.on_track), "status_text": status_text(item, owner_name),
    }


def team_context(team: TeamConfig) -> dict[str, Any]:
    """What templates may say about the team."""
    return {"name": team.name, "address": team.address, "lead": team.lead,
            "members": [{"email": m.email, "name": m.name} for m in team.members]}


def request_context(msg: InboundMessage) -> dict[str, Any]:
    """What templates may say about the mail that started it all."""
    return {"subject": msg.subject or "(no subject)", "sender": msg.sender,
            "sender_name": msg.sender_name or msg.sender.split("@")[0],
            "summary": msg.summary, "text": msg.text,
            "attachments": [{"name": a.name, "size": a.size} for a in msg.attachments]}


def person_context(msg: InboundMessage, team: TeamConfig, item: ItemView | None = None) -> dict[str, Any]:
    """Who wrote the mail being answered."""
    member = team.member(msg.sender) if msg.sender else None
    known = item.requester_name if item is not None and msg.sender == item.requester else ""
    name = member.name if member else (msg.sender_name or known or msg.sender.split("@")[0] or "someone")
    return {"email": msg.sender, "name": name,
            "attachments": [{"name": a.name, "size": a.size} for a in msg.attachments]}


NOBODY = {"email": "", "name": "", "attachments": []}  # the `sender` of mail no incoming mail asked for


def mail_context(team: TeamConfig, item: ItemView | None, msg: InboundMessage | None,
                 disposition: Disposition | None = None, request: dict[str, Any] | None = None,
                 survey: bool = True, language: str = "") -> dict[str, Any]:
    """Everything a template may use: the team, the item (if any), the request, and why.

    Every template sees every name (empty where it does not apply), so StrictUndefined only
    catches real typos. `request` is the mail that opened the item, `sender` the one being answered
    (nobody, for the mail the sweep sends); `language` the requester's, which an item knows itself.
    """
    assert msg is not None or request is not None
    return {"team": team_context(team), "item": item_context(item, team) if item else None,
            "language": (item.language if item else "") or language or team.language,
            "request": request or request_context(msg),  # type: ignore[arg-type]
            "sender": person_context(msg, team, item) if msg else NOBODY,
            "reason": getattr(disposition, "reason", ""), "redirect_to": getattr(disposition, "to", ""),
            "message": "", "summary": "", "changes": [], "problems": [], "keywords": [],
            "old_due_at": None, "rating": None, "history": [], "reopened": False, "survey": survey,
            "now": None, "absence": [], "requester_told": False, "digest": None, "with_keywords": False,
            "stranger": False}


def compose(kind: str, rendered: Rendered, team: TeamConfig, to: tuple[str, ...], now: datetime,
            ref: str | None = None, thread: Sequence[str] = (), attach_original: bytes | None = None,
            reply_address: str | None = None, attachments: Sequence[Message] = ()) -> OutgoingMail:
    """Build the outgoing mail; CR/LF in any value can never start a new header.

    `thread` holds the Message-IDs this mail answers, oldest first: the last is In-Reply-To.
    """
    subject = _one_line(rendered.subject)
    if ref and f"[{ref}]" not in subject:
        subject = f"[{ref}] {subject}"
    if len(subject) > MAX_SUBJECT:  # a requester's megabyte of subject must not make the mail unsendable
        subject = subject[:MAX_SUBJECT - 1].rstrip() + "…"
    body = text_part(rendered.text, "plain")
    if rendered.html:
        body = MIMEMultipart("alternative", _subparts=[body, text_part(rendered.html, "html")])
    files = list(attachments)
    if attach_original is not None:
        # As a file: message/rfc822 may not be base64-encoded, and broken originals must survive.
        original = MIMEApplication(attach_original, Name="original.eml")
        original["Content-Disposition"] = 'attachment; filename="original.eml"'
        files.append(original)
    if files:
        body = MIMEMultipart("mixed", _subparts=[body, *files])
    message_id = make_msgid("inboxd", domain=team.address.partition("@")[2])
    headers = {
        "From": formataddr((_one_line(team.name), team.address), "utf-8"),
        "To": ", ".join(_one_line(a) for a in to),
        "Reply-To": reply_address or team.address,
        "Subject": subject if subject.isascii() else Header(subject, "utf-8").encode(),
        "Date": format_datetime(now),
        "Message-ID": message_id,
        "Auto-Submitted": "auto-replied" if thread else "auto-generated",
    }
    if thread:
        headers["In-Reply-To"] = thread[-1]
        headers["References"] = " ".join(thread[-11:])
    if ref:
        headers["X-Inboxd-Ref"] = ref
    for name, value in headers.items():
        body[name] = value
    wire = _WIRE if all(a.isascii() for a in to) else _WIRE_UTF8
    return OutgoingMail(kind, team.address, to, subject, message_id, body.as_bytes(policy=wire), rendered.text)


def text_part(text: str, subtype: str) -> Message:
    """A UTF-8 text part in quoted-printable, as MIMEText makes it, encoded by binascii (C) where it can.

    The email package encodes in Python, a character at a time: a third of composing a mail. binascii
    can leave a line of 77 or 78 characters (RFC 2045 allows 76); such text goes the email package's way.
    """
    encoded = binascii.b2a_qp(text.replace("\r\n", "\n").replace("\r", "\n").encode(), istext=True)
    if max(map(len, encoded.split(b"\n"))) > MAX_QP_LINE:
        # The stubs say MIMEText takes a charset name; it takes a Charset too, which is how QP bodies are had.
        return MIMEText(text, subtype, _UTF8)  # type: ignore[arg-type]
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(encoded.decode("ascii"))
    return part


MAX_QP_LINE = 76


@dataclass(frozen=True)
class Composer:
    """Turns the replies a decision calls for into finished mails: rendered, threaded, with their files."""

    config: Config
    renderer: Renderer

    def context(self, item: ItemView | None, msg: InboundMessage | None, request: dict[str, Any] | None = None,
                disposition: Disposition | None = None, language: str = "") -> dict[str, Any]:
        """The template context for mail about this item, answering this mail (if any), in the requester's language."""
        return mail_context(self.config.team, item, msg, disposition, request, self.config.service.survey, language)

    def compose(self, replies: Sequence[Reply], context: Mapping[str, Any], item: ItemView | None, now: datetime,
                msg: InboundMessage | None = None, opening_id: str | None = None,
                history: list[dict[str, Any]] | None = None) -> list[OutgoingMail]:
        """Each reply rendered and built; `opening_id` is the item's first mail, that requester mail threads on."""
        team = self.config.team
        ref = team.ref(item.id) if item is not None else None
        mails = []
        for reply in replies:
            values = dict(context) | dict(reply.extra)
            if reply.with_history and item is not None:
                values["history"] = history or []
            requester = item.requester if item is not None else values["request"]["sender"]
            # Mail to the requester is in their language; to anyone else (the team, another team), the team's.
            language = values["language"] if requester and requester in reply.to else team.language
            rendered = self.renderer.render(reply.template, values, language)
            secret = reply.internal and item is not None and item.id is not None and self.config.commands.require_secret
            # Each member's reply address is their own, so team mail with one goes to each member alone.
            for to, reply_address in ([((r,), secret_address(team, item, r)) for r in reply.to]
                                      if secret and item is not None else [(reply.to, None)]):
                mail = compose(reply.template, rendered, team, to, now, ref=ref,
                               thread=self._thread(reply, item, msg, opening_id),
                               attach_original=msg.original if reply.attach_original and msg else None,
                               reply_address=reply_address,
                               attachments=msg.files if reply.carry_attachments and msg else ())
                mails.append(replace(mail, acknowledges=reply.acknowledges, automatic=reply.automatic))
        return mails

    @staticmethod
    def _thread(reply: Reply, item: ItemView | None, msg: InboundMessage | None,
                opening_id: str | None) -> tuple[str, ...]:
        """The Message-IDs a mail answers: the requester's thread, or the mail being answered."""
        if reply.to_requester and item is not None and (msg is None or msg.sender != item.requester):
            return (opening_id,) if opening_id else ()
        return (*msg.references[-10:], msg.message_id) if reply.threaded and msg is not None else ()


def _one_line(value: str) -> str:
    """A header value on one line, without the control characters (NUL…) SMTP servers refuse."""
    return " ".join(_CONTROLS.sub(" ", value).split())


_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
