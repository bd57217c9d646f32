"""Outgoing mail: template contexts and RFC 5322 messages built from rendered templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTPUTF8, compat32
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any

from .config import TeamConfig
from .message import InboundMessage
from .models import Item
from .render import Rendered
from .routing import Decline, Disposition, Queue, Redirect

# The classic MIME classes build mail five times faster than EmailMessage; readable QP bodies.
_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP
_WIRE = compat32.clone(linesep="\r\n")
_WIRE_UTF8 = SMTPUTF8.clone(linesep="\r\n")  # jöhn@exämple.org must stay as it is (RFC 6532), not be encoded


@dataclass(frozen=True)
class OutgoingMail:
    """A mail ready for the outbox."""

    kind: str
    sender: str
    to: tuple[str, ...]
    subject: str
    message_id: str
    raw: bytes


def ref_of(item: Item, team: TeamConfig) -> str:
    """The item's reference, e.g. IT-42."""
    return f"{team.ref_prefix}-{item.id if item.id is not None else 'NEW'}"


def status_text(item: Item, owner_name: str) -> str:
    """Where an item stands, in words a requester understands."""
    who = owner_name or "the team"
    return {"new": "in the queue, waiting for someone on the team to take it",
            "open": f"with {who}", "working": f"being worked on by {who}",
            "waiting": f"waiting on {'you' if item.waiting_on in (None, 'requester') else item.waiting_on}",
            "done": "done", "declined": "declined", "redirected": "handed over to another team"}.get(item.status,
                                                                                                 item.status)


def item_context(item: Item, team: TeamConfig) -> dict[str, Any]:
    """What templates may say about an item."""
    owner = team.member(item.owner) if item.owner else None
    owner_name = owner.name if owner else (item.owner or "")
    return {
        "ref": ref_of(item, team), "subject": item.subject, "requester": item.requester,
        "requester_name": item.requester_name or item.requester.split("@")[0],
        "owner": item.owner, "owner_name": owner_name,
        "queue": item.queue, "status": item.status, "priority": item.priority,
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


def person_context(msg: InboundMessage, team: TeamConfig, item: Item | None = None) -> dict[str, Any]:
    """Who wrote the mail being answered."""
    member = team.member(msg.sender) if msg.sender else None
    known = item.requester_name if item is not None and msg.sender == item.requester else ""
    name = member.name if member else (msg.sender_name or known or msg.sender.split("@")[0] or "someone")
    return {"email": msg.sender, "name": name,
            "attachments": [{"name": a.name, "size": a.size} for a in msg.attachments]}


NOBODY = {"email": "", "name": "", "attachments": []}  # the `sender` of mail no incoming mail asked for


def mail_context(team: TeamConfig, item: Item | None, msg: InboundMessage | None,
                 disposition: Disposition | None = None, request: dict[str, Any] | None = None,
                 survey: bool = True) -> dict[str, Any]:
    """Everything a template may use: the team, the item (if any), the request, and why.

    Every template sees every name (empty where it does not apply), so StrictUndefined only
    catches real typos. `request` is the mail that opened the item, `sender` the one being answered
    (nobody, for the mail the sweep sends).
    """
    assert msg is not None or request is not None
    return {"team": team_context(team), "item": item_context(item, team) if item else None,
            "request": request or request_context(msg),  # type: ignore[arg-type]
            "sender": person_context(msg, team, item) if msg else NOBODY,
            "reason": getattr(disposition, "reason", ""), "redirect_to": getattr(disposition, "to", ""),
            "message": "", "summary": "", "changes": [], "problems": [], "keywords": [],
            "old_due_at": None, "rating": None, "history": [], "reopened": False, "survey": survey,
            "now": None, "absence": [], "requester_told": False, "digest": None}


@dataclass(frozen=True)
class Reply:
    """One mail a disposition, a command or a conversation calls for."""

    template: str
    to: tuple[str, ...]
    threaded: bool = True  # an answer to the request (In-Reply-To); owners and other teams get new mail
    acknowledges: bool = False
    attach_original: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # template context on top of the usual
    internal: bool = False  # to the team: Reply-To is the item's secret address when that is on
    to_requester: bool = False
    carry_attachments: bool = False  # the files of the mail being answered go along
    with_history: bool = False  # the item's audit trail goes into the context (a low rating to the lead)
    automatic: bool = False  # an automatic answer to the sender: counts against [limits] automatic_per_sender


def replies_for(disposition: Disposition, sender: str, owner: str | None = None,
                queue_members: tuple[str, ...] = ()) -> list[Reply]:
    """The mails a disposition sends, decided purely: the pipeline enqueues them, the dry run shows them.

    A new item goes to its owner, or, unassigned, to the queue's members so that one can #take it.
    """
    to_sender = (sender,) if sender else ()
    if isinstance(disposition, Queue):
        template = disposition.ack_template()
        team = [Reply("assigned", (owner,), threaded=False, internal=True)] if owner else \
            [Reply("new_request", queue_members, threaded=False, internal=True)] if queue_members else []
        return team + ([Reply(template, to_sender, acknowledges=True, automatic=True)] if template and sender else [])
    if isinstance(disposition, Decline):
        return [Reply(disposition.template, to_sender, automatic=True)] if sender else []
    if isinstance(disposition, Redirect):
        return [Reply("forwarded", (disposition.to,), threaded=False, attach_original=True)] + \
            ([Reply(disposition.template, to_sender, automatic=True)] if sender else [])
    return []


def compose(kind: str, rendered: Rendered, team: TeamConfig, to: tuple[str, ...], now: datetime,
            ref: str | None = None, thread: tuple[str, ...] = (), attach_original: bytes | None = None,
            reply_address: str | None = None, attachments: tuple[Message, ...] = ()) -> OutgoingMail:
    """Build the outgoing mail; CR/LF in any value can never start a new header.

    `thread` holds the Message-IDs this mail answers, oldest first: the last is In-Reply-To.
    """
    subject = _one_line(rendered.subject)
    if ref and f"[{ref}]" not in subject:
        subject = f"[{ref}] {subject}"
    body: Message = MIMEText(rendered.text, "plain", _UTF8)
    if rendered.html:
        body = MIMEMultipart("alternative", _subparts=[body, MIMEText(rendered.html, "html", _UTF8)])
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
    return OutgoingMail(kind, team.address, to, subject, message_id, body.as_bytes(policy=wire))


def attachment_parts(raw: bytes) -> tuple[Message, ...]:
    """The attached files of a mail, as MIME parts that can go into another mail unchanged."""
    parsed = message_from_bytes(raw, policy=compat32)
    return tuple(part for part in parsed.walk()
                 if not part.is_multipart() and part is not parsed
                 and (part.get_filename() or part.get_content_disposition() == "attachment"))


def _one_line(value: str) -> str:
    return " ".join(value.split())
