"""One incoming mail, at most one mail per recipient: the keywords' mails merged by what the mail finally did.

Each keyword plans its mails as if it were alone; a mail with many keywords (500 `#eta` lines,
`#assign` back and forth) would send one mail per line. These pure functions keep only what the
final state calls for, judged against the state before the mail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from ..domain import ItemState, Reply, Status, frozen

if TYPE_CHECKING:  # base imports this module to merge the mails it plans
    from .base import Effect

# The requester's mail for each closed status: sent only if the mail leaves the item so.
CLOSING: dict[str, str] = {Status.DONE: "resolved", Status.DECLINED: "declined", Status.REDIRECTED: "redirected"}
# When one address is due several mails, the first of these wins: the sender's answer lists every
# change, a closing mail outweighs a new date, which outweighs the relayed text.
RANK = ("help", "command_ok", "resolved", "declined", "redirected", "forwarded", "assigned", "deadline_changed",
        "relay")


def merge_keyword_mails(planned: Sequence[Reply], before: ItemState, after: ItemState,
                        sender: str) -> tuple[Reply, ...]:
    """The mails the keywords planned, reduced to what the final state calls for, one per recipient."""
    by_template: dict[str, list[int]] = {}
    for index, mail in enumerate(planned):
        by_template.setdefault(mail.template, []).append(index)
    kept: dict[int, Reply] = {}
    for template, indices in by_template.items():
        chosen = _choose(template, [(i, planned[i]) for i in indices], before, after, sender)
        if chosen is not None:
            kept[chosen[0]] = chosen[1]
    return tuple(one_per_recipient([kept[index] for index in sorted(kept)]))


def _choose(template: str, mails: list[tuple[int, Reply]], before: ItemState, after: ItemState,
            sender: str) -> tuple[int, Reply] | None:
    """The one mail of this template (with its place in the plan) the final state still calls for, or None."""
    last = mails[-1]
    if template in CLOSING.values():  # #done then #working in one mail: the requester hears of neither
        return last if CLOSING.get(after.status) == template else None
    if template == "forwarded":
        return last if after.status == Status.REDIRECTED else None
    if template == "assigned":
        if after.owner in (None, before.owner, sender):  # nobody new, or the sender, who knows it
            return None
        return next((m for m in reversed(mails) if m[1].to == (after.owner,)), None)
    if template == "deadline_changed":
        dated = _new_date(last[1], before, after)
        return (last[0], dated) if dated is not None else None
    return last  # a keyword's mail these rules do not know: the latest is the one that counts


def _new_date(last: Reply, before: ItemState, after: ItemState) -> Reply | None:
    """One `deadline_changed` with the last reason, from the date before the mail, if the final date is later."""
    if before.due_at is None or after.due_at is None or after.due_at <= before.due_at:
        return None  # no promise broken: a date set first, kept, or moved back and forth ends no later
    return replace(last, extra=frozen({**last.extra, "old_due_at": before.due_at}))


def with_answer(mails: Sequence[Reply], sender: str, effects: Sequence[Effect]) -> list[Reply]:
    """The mails plus the sender's one answer: `help` for a mail of only #help, else `command_ok`."""
    helped = any(e.help for e in effects)
    if effects and all(e.help for e in effects):
        answer = [Reply("help", (sender,), internal=True)]
    elif effects:  # every change listed, and the keyword table below them when #help was among them
        answer = [Reply("command_ok", (sender,), internal=True, extra=frozen({"with_keywords": helped}))]
    else:
        answer = []
    return one_per_recipient([*mails, *answer])


def one_per_recipient(mails: Sequence[Reply]) -> list[Reply]:
    """At most one mail per address, the highest in RANK (the latest among equals), in their planned order."""
    def rank(index: int) -> tuple[int, int]:
        template = mails[index].template
        return (RANK.index(template) if template in RANK else len(RANK), -index)

    taken: set[str] = set()
    keep: set[int] = set()
    for index in sorted(range(len(mails)), key=rank):
        if taken.isdisjoint(mails[index].to):
            taken.update(mails[index].to)
            keep.add(index)
    return [mail for index, mail in enumerate(mails) if index in keep]
