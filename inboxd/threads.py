"""Threads: which item a mail belongs to, by subject tag, secret reply address or Message-ID."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import TeamConfig
from .message import InboundMessage
from .models import Item, Message

_TAG = re.compile(r"\[\s*([A-Za-z0-9]+)\s*-\s*(\d{1,12})\s*\]")
_RECIPIENT_HEADERS = ("delivered-to", "x-original-to", "envelope-to")


@dataclass(frozen=True)
class Thread:
    """The item a mail belongs to, how it was found, and whether it came to the item's secret address."""

    item: Item
    via: str  # tag | address | headers
    secret_ok: bool


def tagged_ids(subject: str, prefix: str) -> list[int]:
    """Item numbers in `[IT-42]` tags of this team's prefix, in order; other teams' tags are not ours."""
    return [int(number) for tag, number in _TAG.findall(subject) if tag.upper() == prefix]


def without_tags(subject: str, prefix: str) -> str:
    """The subject with this team's tags taken out, for a new item's own subject."""
    kept = _TAG.sub(lambda m: "" if m.group(1).upper() == prefix else m.group(0), subject)
    return " ".join(kept.split()) or subject


def secret_address(team: TeamConfig, item: Item) -> str:
    """The item's own reply address, e.g. help+it42.1f9a03bc@example.org."""
    local, _, domain = team.address.partition("@")
    return f"{local}+{team.ref_prefix.lower()}{item.id}.{item.secret}@{domain}"


def addressed(msg: InboundMessage, team: TeamConfig) -> list[tuple[int, str]]:
    """(item number, secret) of every secret reply address the mail was sent to."""
    local, _, domain = team.address.partition("@")
    pattern = re.compile(rf"{re.escape(local)}\+{team.ref_prefix.lower()}(\d{{1,12}})\.([0-9a-z]+)@{re.escape(domain)}")
    recipients = list(msg.to) + list(msg.cc)
    for name in _RECIPIENT_HEADERS:
        recipients += [v.strip("<> ").lower() for v in msg.headers.get(name, ())]
    found = (pattern.fullmatch(r) for r in recipients)
    return [(int(m.group(1)), m.group(2)) for m in found if m]


def find_thread(msg: InboundMessage, team: TeamConfig) -> Thread | None:
    """The item this mail answers, or None: then it is a new request."""
    secrets = addressed(msg, team)

    def thread(item: Item, via: str) -> Thread:
        return Thread(item, via, (item.id, item.secret) in secrets)

    for number in tagged_ids(msg.subject, team.ref_prefix):
        item = Item.get_or_none(Item.id == number)
        if item is not None:  # a tag of an item that doesn't exist is not trusted
            return thread(item, "tag")
    for number, _ in secrets:
        item = Item.get_or_none(Item.id == number)
        if item is not None:
            return thread(item, "address")
    ids = [i for i in (msg.in_reply_to, *reversed(msg.references[-20:])) if i]
    if ids:
        known = (Message.select(Message.item).where(Message.message_id.in_(ids) & Message.item.is_null(False))
                 .order_by(Message.id.desc()).first())
        if known is not None:
            return thread(Item.get_by_id(known.item_id), "headers")
    return None


def item_answered_automatically(msg: InboundMessage, raw: bytes, team: TeamConfig) -> Item | None:
    """The item of one of our mails that a bounce or an auto-reply answers, if any.

    Auto-replies name our mail in In-Reply-To; bounces quote its headers in the report.
    """
    domain = re.escape(team.address.partition("@")[2])
    quoted = re.findall(rb"<[\w.+-]+\.inboxd@" + domain.encode() + rb">", raw[:200_000], re.IGNORECASE)
    ids = [i for i in (msg.in_reply_to, *msg.references[-20:]) if i] + [q.decode() for q in quoted[:20]]
    if not ids:
        return None
    known = (Message.select(Message.item).where(Message.message_id.in_(ids) & (Message.direction == "out")
                                                & Message.item.is_null(False)).order_by(Message.id.desc()).first())
    return Item.get_by_id(known.item_id) if known else None
