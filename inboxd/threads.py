"""Threads: which item a mail belongs to, by subject tag, secret reply address or Message-ID.

Deciding is pure; the questions to the database go through `ThreadLookup`, answered by
`queries.StoredThreads` in the daemon and by a dict in the tests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .domain import ItemView
from .message import InboundMessage
from .settings import TeamConfig

_TAG = re.compile(r"\[\s*([A-Za-z0-9]+)\s*-\s*(\d{1,12})\s*\]")
_RECIPIENT_HEADERS = ("delivered-to", "x-original-to", "envelope-to")  # the envelope, as the MTA wrote it
# Only these may carry a secret: the envelope, and the first few visible recipients. A mail that
# lists thousands of guesses in Cc gets no more tries than one that lists one.
ENVELOPE_VALUES = 3
VISIBLE_RECIPIENTS = 5
TOKEN_HEX = 16  # 64 bits per member and item
MAX_TAGS = 5  # a subject's first tags of this team are tried; one of 100,000 tags gets no more lookups


class ThreadLookup(Protocol):
    """The stored items a thread may lead to."""

    def item(self, number: int) -> ItemView | None:
        """The item with this number, if it exists."""
        ...

    def item_of_mail(self, message_ids: Sequence[str], outgoing_only: bool = False) -> ItemView | None:
        """The item of the latest stored mail (ours only, if asked) with one of these Message-IDs."""
        ...

    def kind_of_mail(self, message_id: str) -> str | None:
        """Which of our mails (its template: assigned, owner_reminder…) has this Message-ID, if any."""
        ...


@dataclass(frozen=True)
class Thread:
    """The item a mail belongs to, how it was found, and whether it came to the item's secret address."""

    item: ItemView
    via: str  # tag | address | headers
    secret_ok: bool
    answers: str | None = None  # the kind of our mail it replies to (In-Reply-To), if it is one of ours


def tagged_ids(subject: str, prefix: str) -> list[int]:
    """Item numbers in the first MAX_TAGS `[IT-42]` tags of this team's prefix, each once, in order.

    Other teams' tags are not ours.
    """
    numbers: dict[int, None] = {}
    for tag in _TAG.finditer(subject):
        if tag.group(1).upper() == prefix:
            numbers[int(tag.group(2))] = None
            if len(numbers) == MAX_TAGS:
                break
    return list(numbers)


def without_tags(subject: str, prefix: str) -> str:
    """The subject with this team's tags taken out, for a new item's own subject."""
    kept = _TAG.sub(lambda m: "" if m.group(1).upper() == prefix else m.group(0), subject)
    return " ".join(kept.split()) or subject


def member_token(item: ItemView, member: str) -> str:
    """The secret one member's replies about one item carry: 64 bits, keyed by the item's own secret.

    Bound to the member it was sent to: a requester who sees one member's address (an owner's
    direct mail with it in Cc) cannot use it to act as another member.
    """
    digest = hmac.new(item.secret.encode(), member.strip().lower().encode(), hashlib.sha256).hexdigest()
    return digest[:TOKEN_HEX]


def secret_address(team: TeamConfig, item: ItemView, member: str) -> str:
    """One member's reply address for an item, e.g. help+it42.1f9a03bc5e7d2a60@example.org."""
    local, _, domain = team.address.partition("@")
    return f"{local}+{team.ref_prefix.lower()}{item.id}.{member_token(item, member)}@{domain}"


def addressed(msg: InboundMessage, team: TeamConfig) -> list[tuple[int, str]]:
    """(item number, token) of each secret reply address among the recipients that may carry one."""
    local, _, domain = team.address.partition("@")
    pattern = re.compile(rf"{re.escape(local)}\+{team.ref_prefix.lower()}(\d{{1,12}})\.([0-9a-f]{{{TOKEN_HEX}}})"
                         rf"@{re.escape(domain)}")
    recipients = [*msg.to[:VISIBLE_RECIPIENTS], *msg.cc[:VISIBLE_RECIPIENTS]]
    for name in _RECIPIENT_HEADERS:
        recipients += [v.strip("<> ").lower() for v in msg.headers.get(name, ())[:ENVELOPE_VALUES]]
    found = (pattern.fullmatch(r) for r in recipients)
    return list(dict.fromkeys((int(m.group(1)), m.group(2)) for m in found if m))


def find_thread(msg: InboundMessage, team: TeamConfig, lookup: ThreadLookup) -> Thread | None:
    """The item this mail answers, or None: then it is a new request."""
    secrets = addressed(msg, team)

    def thread(item: ItemView, via: str) -> Thread:
        proven = bool(item.secret) and bool(msg.sender) and (item.id, member_token(item, msg.sender)) in secrets
        return Thread(item, via, proven, lookup.kind_of_mail(msg.in_reply_to) if msg.in_reply_to else None)

    tried: set[int] = set()  # each number is looked up once, however often tags and addresses name it
    for number, via in [*((n, "tag") for n in tagged_ids(msg.subject, team.ref_prefix)),
                        *((n, "address") for n, _ in secrets)]:
        item = lookup.item(number) if number not in tried else None
        tried.add(number)
        if item is not None:  # a tag of an item that doesn't exist is not trusted
            return thread(item, via)
    ids = [i for i in (msg.in_reply_to, *reversed(msg.references[-20:])) if i]
    if ids:
        known = lookup.item_of_mail(ids)
        if known is not None:
            return thread(known, "headers")
    return None


def item_answered_automatically(msg: InboundMessage, team: TeamConfig, lookup: ThreadLookup) -> ItemView | None:
    """The item of one of our mails that a bounce or an auto-reply answers, if any.

    Auto-replies name our mail in In-Reply-To; bounces quote its headers in the report.
    """
    domain = "@" + team.address.partition("@")[2].lower()
    quoted = [q for q in msg.quoted_ids if q.lower().endswith(domain + ">")]
    ids = [i for i in (msg.in_reply_to, *msg.references[-20:]) if i] + quoted[:20]
    return lookup.item_of_mail(ids, outgoing_only=True) if ids else None
