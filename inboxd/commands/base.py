"""The keyword machinery: item state, effects, the registry, reading keyword lines, planning them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import ClassVar

from ..config import Config
from ..domain import ItemState, Reply
from ..wording import closest
from .merge import merge_keyword_mails

# More keywords than this in one mail is a paste or a script gone wrong, not someone steering an
# item: the mail is refused whole rather than applied line by line.
MAX_KEYWORDS = 20

_KEYWORD = re.compile(r"#([A-Za-z][A-Za-z-]*)\b[ \t]*(.*)")


@dataclass(frozen=True)
class CommandContext:
    """Who sent the commands, when, and about which request."""

    config: Config
    sender: str
    now: datetime
    requester: str
    requester_name: str = ""
    body: str = ""  # the text below the keywords: #note keeps it, #done and #decline may use it


@dataclass(frozen=True)
class Effect:
    """The outcome of one command: the new state, one line on what changed, and the mails it sends."""

    state: ItemState
    change: str
    mails: tuple[Reply, ...] = ()
    note: str | None = None  # internal text: the mail is not relayed to the requester
    help: bool = False
    used_body: bool = False  # the text below the keywords became the summary or reason: not relayed too
    away: tuple[str, datetime | None] | None = None  # (member, back on) from #away, (member, None) from #back
    relay: bool = False  # #reply: the text goes to the requester even when it answers team-internal mail


class Refused(Exception):
    """A command that cannot be applied; the message says why."""


@dataclass(frozen=True)
class Keyword:
    """One `#name argument` line found at the top of the new text."""

    line: int
    name: str
    argument: str


class Command:
    """One keyword: `apply` returns the Effect or raises Refused."""

    name: ClassVar[str]
    usage: ClassVar[str]
    summary: ClassVar[str]

    def apply(self, argument: str, state: ItemState, ctx: CommandContext) -> Effect:
        raise NotImplementedError


COMMANDS: dict[str, Command] = {}


def register(cls: type[Command]) -> type[Command]:
    """Add a command to the registry; two with one name is a programming error caught at import."""
    if cls.name in COMMANDS:
        raise RuntimeError(f"two commands are called #{cls.name}")
    COMMANDS[cls.name] = cls()
    return cls


def split_keywords(text: str) -> tuple[list[Keyword], str]:
    """The keyword lines at the top of the new text (one per line, blank lines allowed) and the rest."""
    lines = text.splitlines()
    keywords: list[Keyword] = []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            continue
        match = _KEYWORD.fullmatch(stripped)
        if match is None:
            return keywords, "\n".join(lines[number - 1:]).strip()
        keywords.append(Keyword(number, match.group(1).lower(), match.group(2).strip()))
    return keywords, ""


def did_you_mean(name: str) -> str:
    """`unknown keyword #dne (did you mean #done?)`."""
    close = closest(name, COMMANDS)
    return f"unknown keyword #{name}" + (f" (did you mean #{close}?)" if close else "; #help lists them")


def help_table() -> list[dict[str, str]]:
    """Every keyword with its usage and effect, for the `help` and `command_error` mails."""
    return [{"usage": c.usage, "summary": c.summary} for c in COMMANDS.values()]


@dataclass(frozen=True)
class CommandPlan:
    """All keywords of one mail, planned in order: the final state, effects and merged mails, or every problem."""

    keywords: list[Keyword]
    rest: str
    state: ItemState
    effects: list[Effect] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    mails: tuple[Reply, ...] = ()  # the effects' mails merged: at most one per recipient (merge.py)


def too_many(count: int) -> str:
    """The refusal of a mail with more keywords than MAX_KEYWORDS."""
    return (f"{count} keywords in one mail: at most {MAX_KEYWORDS} are accepted, so none was applied; "
            "send them in several mails")


def plan_commands(text: str, state: ItemState, ctx: CommandContext) -> CommandPlan:
    """Apply each keyword to the state in order; any problem means none of them counts."""
    keywords, rest = split_keywords(text)
    if len(keywords) > MAX_KEYWORDS:
        return CommandPlan(keywords, rest, state, problems=[too_many(len(keywords))])
    ctx = replace(ctx, body=rest)
    effects: list[Effect] = []
    problems: list[str] = []
    current = state
    for keyword in keywords:
        command = COMMANDS.get(keyword.name)
        if command is None:
            problems.append(f"line {keyword.line}: {did_you_mean(keyword.name)}")
            continue
        try:
            effect = command.apply(keyword.argument, current, ctx)
        except Refused as exc:
            problems.append(f"line {keyword.line}: {exc}")
            continue
        effects.append(effect)
        current = effect.state
    if problems:
        return CommandPlan(keywords, rest, state, [], problems)
    mails = merge_keyword_mails([m for e in effects for m in e.mails], state, current, ctx.sender)
    return CommandPlan(keywords, rest, current, effects, mails=mails)
