"""What keeps loops and floods in check, decided from figures the pipeline looks up (docs/conversations.md).

Loops are told from people by what loops look like: the same text again, a sender past a high
count, an item whose mail pings back and forth. A busy colleague is none of these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from .settings import Config


@dataclass(frozen=True)
class SenderSigns:
    """What the last window says about one sender, for deciding how to answer their new mail."""

    automatic: int  # automatic mails (acknowledgements, declines…) they got from us
    requests: int  # their mails that became items, this one not counted
    same_text_as: str | None = None  # the reference of an earlier request of theirs with the same text


_PREFIXES = re.compile(r"^\s*((re|aw|sv|antw|vs|r|fwd?|wg|tr|rv)\s*(\[\d+\])?\s*:\s*|\[[^\]]*\]\s*)+",
                       re.IGNORECASE)


def subject_core(subject: str) -> str:
    """A subject without its Re:/Fwd: prefixes and [tags]: what an auto-responder's answers keep the same."""
    return " ".join(_PREFIXES.sub("", subject).split()).casefold()


def window_start(config: Config, now: datetime) -> datetime:
    """Since when the caps count: `[limits] automatic_window` back from now."""
    return now - (config.calendar.add(now, config.limits.automatic_window) - now)


def why_not_answered(config: Config, sender: str, signs: SenderSigns) -> str | None:
    """Why this sender gets no automatic answer now, or None: the same text again, or far too many mails."""
    limits = config.limits
    if not sender:
        return None
    if signs.same_text_as is not None:
        return (f"no automatic answer: {sender} sent the same text as {signs.same_text_as} within "
                f"{limits.automatic_window}, which is what an auto-responder does; the item is kept")
    if signs.automatic >= limits.automatic_per_sender:
        return (f"no automatic answer: {sender} already got {signs.automatic} in the last "
                f"{limits.automatic_window} ([limits] automatic_per_sender = {limits.automatic_per_sender})")
    return None


def why_announcement_held(config: Config, sender: str, signs: SenderSigns) -> str | None:
    """Why the team hears of this request in a batch rather than at once (a flood from one sender), or None.

    Mail without a sender address counts as one sender: a flood of it is batched too.
    """
    limits = config.limits
    if signs.requests < limits.automatic_per_sender:
        return None
    return (f"announced to the team in the next batch, not at once: {sender or 'mail without a sender address'} "
            f"sent {signs.requests + 1} requests "
            f"within {limits.automatic_window} ([limits] automatic_per_sender = {limits.automatic_per_sender})")


def why_item_held(config: Config, sent: int) -> str | None:
    """Why an item's new mails are held: it already sent its share in the window (the round reaching it went)."""
    limits = config.limits
    if sent < limits.mails_per_item:
        return None
    return (f"not sent: this item already sent {sent} mails within {limits.automatic_window} "
            f"([limits] mails_per_item = {limits.mails_per_item}); auto-responders answering each other look "
            f"like this. The mail that came in is kept on the item")
