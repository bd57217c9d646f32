"""Helpers for conversation tests: replies to mail inboxd sent, and a daemon on fakes to talk to."""

from __future__ import annotations

import email
import itertools
from email.message import EmailMessage, Message

from helpers import make_mail

from inboxd import queries
from inboxd.daemon import Daemon
from inboxd.models import Event, Item
from inboxd.threads import secret_address

_ids = itertools.count(1)


def text_of(mail: Message) -> str:
    """The plain text body of a mail inboxd sent."""
    part = next(p for p in mail.walk() if p.get_content_type() == "text/plain")
    return part.get_payload(decode=True).decode()


def unfold(header: str) -> str:
    """A header value as one line."""
    return str(header).replace("\r\n", "").replace("\n", "")


def reply(to: Message, sender: str, body: str, subject: str | None = None, headers: dict[str, str] | None = None,
          recipient: str | None = None, attachment: bytes | None = None, threaded: bool = True) -> bytes:
    """A reply to a mail inboxd sent, quoting it the way mail clients do."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient or to["Reply-To"] or "help@example.org"
    mail["Subject"] = subject if subject is not None else f"Re: {unfold(to['Subject'])}"
    mail["Date"] = "Mon, 23 Nov 2026 11:00:00 +0100"
    mail["Message-ID"] = f"<reply-{next(_ids)}@example.org>"
    if threaded:
        mail["In-Reply-To"] = to["Message-ID"]
        mail["References"] = to["Message-ID"]
    for name, value in (headers or {}).items():
        mail[name] = value
    quoted = "\n".join("> " + line for line in text_of(to).splitlines())
    mail.set_content(f"{body}\n\nOn Mon, 23 Nov 2026 at 10:00, IT Help <help@example.org> wrote:\n{quoted}\n")
    if attachment is not None:
        mail.add_attachment(attachment, maintype="application", subtype="pdf", filename="quote.pdf")
    return mail.as_bytes()


class Conversation:
    """One request on a daemon with fakes, and the mail it sends, mail by mail."""

    def __init__(self, daemon: Daemon, subject: str = "Screen flickers", sender: str = "rosa@example.org",
                 request: bytes | None = None) -> None:
        self.daemon, self.requester = daemon, sender
        self.outbox: list[Message] = []
        self.send(request or make_mail(f"Rosa Lind <{sender}>", subject, "My screen flickers since Monday.",
                                       message_id="<request-1@example.org>"))
        self.item_id = Item.select().order_by(Item.id.desc()).get().id
        self.ack = self.last(to=sender) if sender else self.outbox[0]

    def send(self, *mails: bytes) -> list[Message]:
        """Deliver mails to the alias; return what inboxd sent in answer."""
        self.daemon.source.add(mails)
        self.daemon.ingest(self.daemon.source.open())
        self.daemon.sender.drain()
        sent = [email.message_from_bytes(raw) for _, _, raw in self.daemon.sender.transport.sent]
        new = sent[len(self.outbox):]
        self.outbox = sent
        return new

    @property
    def item(self) -> Item:
        return Item.get_by_id(self.item_id)

    def last(self, to: str) -> Message:
        """The latest mail inboxd sent to this address."""
        return next(m for m in reversed(self.outbox) if to in m["To"])

    def owner_says(self, body: str, sender: str = "ana@example.org", **kwargs) -> list[Message]:
        """A member answers the last mail inboxd sent them (or the ack, forwarded to them)."""
        previous = next((m for m in reversed(self.outbox) if sender in m["To"]), self.ack)
        return self.send(reply(previous, sender, body, **kwargs))

    def requester_says(self, body: str, sender: str | None = None, **kwargs) -> list[Message]:
        """The requester (or `sender`) answers the latest mail inboxd sent the requester."""
        return self.send(reply(self.last(self.requester), sender or self.requester, body, **kwargs))

    def secret_for(self, member: str) -> str:
        """The item's reply address for one member: what inboxd puts in Reply-To of that member's mail."""
        return secret_address(self.daemon.config.team, queries.view(self.item), member)

    def events(self, kind: str | None = None) -> list[Event]:
        query = Event.select().where(Event.item == self.item_id).order_by(Event.id)
        return [e for e in query if kind is None or e.kind == kind]


def subjects(mails: list[Message]) -> list[tuple[str, str]]:
    """(recipient, subject) of each mail."""
    return [(m["To"], unfold(m["Subject"])) for m in mails]
