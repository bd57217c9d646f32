"""The keywords (docs/conversations.md), one small class each: state in, Effect out, or Refused with the reason."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..clock import parse_moment
from ..domain import OPEN_STATUSES, PRIORITIES, ItemState, Reply, Status
from ..wording import did_you_mean, local_time
from .base import Command, CommandContext, Effect, Refused, register

_TAG_NAME = re.compile(r"[\w][\w.-]{0,39}")


def _member(ctx: CommandContext, who: str) -> str:
    member = ctx.config.team.find(who)
    if member is None:
        names = [m.name.lower() for m in ctx.config.team.members] + [m.email for m in ctx.config.team.members]
        hint = did_you_mean(who.lower(), names, quote=False) or \
            f"; members are {', '.join(m.name for m in ctx.config.team.members)}"
        raise Refused(f"{who!r} is not a member of {ctx.config.team.name}{hint}")
    return member.email


def _to_requester(template: str, ctx: CommandContext, **extra: Any) -> tuple[Reply, ...]:
    """The mail for the requester, or none when the request came without a usable sender."""
    return (Reply(template, (ctx.requester,), extra=extra, to_requester=True),) if ctx.requester else ()


def _require_member(ctx: CommandContext, keyword: str, why: str = "") -> None:
    if ctx.config.team.member(ctx.sender) is None:
        raise Refused(f"#{keyword}: {ctx.sender} is not a member of {ctx.config.team.name}{why}")


def _owner_if_member(ctx: CommandContext) -> str | None:
    return ctx.sender if ctx.config.team.member(ctx.sender) else None


def _assigned(state: ItemState, owner: str) -> ItemState:
    return replace(state, owner=owner, status=Status.OPEN if state.status == Status.NEW else state.status)


@register
class Take(Command):
    name, usage, summary = "take", "#take", "assign the item to yourself"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        _require_member(ctx, "take", ", so cannot own items")
        if state.owner == ctx.sender:
            return Effect(state, f"already assigned to {ctx.sender}")
        return Effect(_assigned(state, ctx.sender), f"assigned to {ctx.sender}")


@register
class Assign(Command):
    name, usage, summary = "assign", "#assign ana  or  #assign ana@example.org", "assign the item to a member"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        if not argument:
            raise Refused("#assign needs a member: #assign ana")
        owner = _member(ctx, argument.split()[0])
        mails = () if owner == ctx.sender else (Reply("assigned", (owner,), threaded=False, internal=True),)
        return Effect(_assigned(state, owner), f"assigned to {owner}", mails)


@register
class Working(Command):
    name, usage, summary = "working", "#working", "status: being worked on"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        return Effect(replace(state, status=Status.WORKING, waiting_on=None, resolved_at=None,
                              owner=state.owner or _owner_if_member(ctx)), "status: working")


@register
class Waiting(Command):
    name, usage, summary = "waiting", "#waiting [on whom]", "status: waiting (on the requester unless you say whom)"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        if state.status not in OPEN_STATUSES:
            raise Refused(f"#waiting: the item is {state.status}; #working reopens it first")
        whom = re.sub(r"^(on|for)\s+", "", argument, flags=re.IGNORECASE).strip() or "requester"
        names = {"requester", "them", "him", "her", ctx.requester, *ctx.requester_name.lower().split()}
        if whom.lower() in names:
            whom = "requester"
        return Effect(replace(state, status=Status.WAITING, waiting_on=whom), f"status: waiting on {whom}")


@register
class Done(Command):
    name, usage, summary = "done", "#done [summary]", "status: done; the requester gets a thank-you and the survey"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        if state.status not in OPEN_STATUSES:
            raise Refused(f"#done: the item is already {state.status}")
        done = replace(state, status=Status.DONE, resolved_at=ctx.now, waiting_on=None,
                       owner=state.owner or _owner_if_member(ctx))
        return Effect(done, "status: done; the requester is thanked" +
                      (" and asked for a rating" if ctx.config.service.survey else ""),
                      _to_requester("resolved", ctx, summary=argument or ctx.body), used_body=not argument)


@register
class Eta(Command):
    name, usage, summary = ("eta", "#eta friday | #eta 2026-12-04 [15:00] | #eta +2d  [reason]",
                            "new promised date; a later one tells the requester at once, with the reason")

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        if not argument:
            raise Refused("#eta needs a date: #eta friday, #eta 2026-12-04, #eta +2d")
        if state.status not in OPEN_STATUSES:
            raise Refused(f"#eta: the item is {state.status}")
        try:
            due, reason = parse_moment(argument, ctx.now, ctx.config.calendar)
        except ValueError as exc:
            raise Refused(f"#eta: {exc}") from None
        due = ctx.config.calendar.working_deadline(due, ctx.now)
        if due <= ctx.now:
            raise Refused(f"#eta: {argument.split()[0]} ({_local(due, ctx)}) is in the past")
        new = replace(state, due_at=due, on_track=False)
        later = state.due_at is not None and due > state.due_at
        mails = _to_requester("deadline_changed", ctx, reason=reason, old_due_at=state.due_at) if later else ()
        said = f"promised date: {_local(due, ctx)}" + (" (later than promised: the requester is told why)"
                                                        if later else "")
        return Effect(new, said, mails)


def _local(moment: datetime, ctx: CommandContext) -> str:
    return local_time(moment, ctx.config.calendar.tz)


@register
class OnTrack(Command):
    name, usage, summary = "ontrack", "#ontrack", "confirm the promised date; no automatic notice to the requester"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        if state.status not in OPEN_STATUSES or state.due_at is None:
            raise Refused(f"#ontrack: the item is {state.status}" if state.due_at else "#ontrack: no date to confirm")
        return Effect(replace(state, on_track=True), f"on track for {_local(state.due_at, ctx)}")


@register
class Away(Command):
    name, usage, summary = ("away", "#away until 2026-12-04  (the day you are back)",
                            "you are away: new items skip you, reminders go to your queue, the lead is told")

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        _require_member(ctx, "away")
        text = re.sub(r"^until\s+", "", argument, flags=re.IGNORECASE).strip()
        if not text:
            raise Refused("#away needs the day you are back: #away until 2026-12-04")
        try:
            back, _ = parse_moment(text, ctx.now, ctx.config.calendar)
        except ValueError as exc:
            raise Refused(f"#away: {exc}") from None
        if not re.search(r"\d:\d\d", text) and not text.startswith("+"):  # a day: back when it opens
            back = back.replace(hour=ctx.config.calendar.opens.hour, minute=ctx.config.calendar.opens.minute)
        if back <= ctx.now:
            raise Refused(f"#away: {text.split()[0]} ({_local(back, ctx)}) is in the past")
        return Effect(state, f"{ctx.sender} is away until {_local(back, ctx)}", away=(ctx.sender, back))


@register
class Back(Command):
    name, usage, summary = "back", "#back", "you are back: new items and reminders reach you again"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        _require_member(ctx, "back")
        return Effect(state, f"{ctx.sender} is back", away=(ctx.sender, None))


MEMBER_KEYWORDS = ("away", "back")  # about the sender, not an item: they also work in a new mail to the alias


@register
class Decline(Command):
    name, usage, summary = "decline", "#decline reason", "politely decline; the requester learns why"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        reason = argument or ctx.body
        if not reason:
            raise Refused("#decline needs a reason the requester will read: #decline We only support company laptops")
        if state.status not in OPEN_STATUSES:
            raise Refused(f"#decline: the item is already {state.status}")
        return Effect(replace(state, status=Status.DECLINED, resolved_at=ctx.now, waiting_on=None),
                      "declined; the requester is told why", _to_requester("declined", ctx, reason=reason),
                      used_body=not argument)


@register
class Redirect(Command):
    name, usage, summary = "redirect", "#redirect payroll@example.org [reason]", "hand over to another team"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        to, _, reason = argument.partition(" ")
        to = to.strip("<>").lower()
        if "@" not in to or "." not in to.partition("@")[2]:
            raise Refused("#redirect needs an address: #redirect payroll@example.org")
        if ctx.config.team.speaks_for_team(to) or to == ctx.config.team.address:
            raise Refused(f"#redirect: {to} is this team; use #assign")
        if state.status not in OPEN_STATUSES:
            raise Refused(f"#redirect: the item is already {state.status}")
        mails = (Reply("forwarded", (to,), threaded=False, extra={"redirect_to": to, "reason": reason.strip()}),
                 *_to_requester("redirected", ctx, redirect_to=to, reason=reason.strip()))
        return Effect(replace(state, status=Status.REDIRECTED, resolved_at=ctx.now, waiting_on=None),
                      f"handed over to {to}; the requester is told where to go", mails)


@register
class Priority(Command):
    name, usage, summary = "priority", f"#priority {'|'.join(PRIORITIES)}", "set the priority"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        value = argument.lower().strip()
        if value not in PRIORITIES:
            hint = did_you_mean(value, PRIORITIES, quote=False)
            raise Refused(f"#priority: {argument!r} is not one of {', '.join(PRIORITIES)}{hint}")
        return Effect(replace(state, priority=value), f"priority: {value}")


@register
class Tag(Command):
    name, usage, summary = "tag", "#tag +printer -vip", "add (+name or name) and remove (-name) tags"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        if not argument:
            raise Refused("#tag needs tags: #tag +printer -vip")
        tags = list(state.tags)
        for word in argument.split():
            name = word.lstrip("+-").lower()
            if not _TAG_NAME.fullmatch(name):
                raise Refused(f"#tag: {word!r} is not a tag (letters, digits, . and -)")
            if word.startswith("-"):
                if name not in tags:
                    raise Refused(f"#tag: the item has no tag {name!r} to remove")
                tags.remove(name)
            elif name not in tags:
                tags.append(name)
        return Effect(replace(state, tags=tuple(tags)), f"tags: {', '.join(tags) or 'none'}")


@register
class ReplyToRequester(Command):
    name, usage, summary = ("reply", "#reply",
                            "send the text below to the requester, also when answering mail meant for the team")

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        if not (argument or ctx.body):
            raise Refused("#reply needs text below it: the words for the requester")
        if not ctx.requester:
            raise Refused("#reply: the request came without a sender address; nobody to reply to")
        return Effect(state, f"the text below goes to {ctx.requester}", relay=True)


@register
class Note(Command):
    name, usage, summary = "note", "#note text", "an internal note: nothing in this mail reaches the requester"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        note = "\n".join(part for part in (argument, ctx.body) if part)
        if not note:
            raise Refused("#note needs text: #note the vendor promised a call back")
        return Effect(state, "internal note added (not sent to the requester)", note=note)


@register
class Help(Command):
    name, usage, summary = "help", "#help", "reply with this list"

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        return Effect(state, "sent you the list of keywords", help=True)
