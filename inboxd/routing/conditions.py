"""Conditions of a rule's `match`: field tests combined with any / all / not."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import parse_size
from ..message import InboundMessage

ADDRESS_FIELDS = ("from", "to", "cc")
FIELDS = ("from", "to", "cc", "subject", "body", "header", "attachment", "size")


class Condition(Protocol):
    """Something a mail does or does not satisfy, with the reason."""

    def evaluate(self, msg: InboundMessage) -> tuple[bool, str]:
        """Whether the mail satisfies it, and a short human explanation."""
        ...


def _domain(value: str, arg: str) -> bool:
    domain = value.rpartition("@")[2]
    arg = arg.lstrip("@")
    return domain == arg or domain.endswith("." + arg)


# op name -> (test of one field value against one argument, how to prepare the argument); the prepared
# argument is a string, a compiled pattern or a size, so each pair agrees on its own type.
OPERATORS: dict[str, tuple[Callable[[str, Any], bool], Callable[[Any], Any]]] = {
    "is": (lambda v, a: v == a, lambda a: str(a).casefold()),
    "contains": (lambda v, a: a in v, lambda a: str(a).casefold()),
    "matches": (lambda v, a: fnmatch.fnmatchcase(v, a), lambda a: str(a).casefold()),
    "regex": (lambda v, a: bool(a.search(v)), lambda a: re.compile(str(a), re.I)),
    "domain": (_domain, lambda a: str(a).casefold()),
    "over": (lambda v, a: int(v) > a, parse_size),
    "under": (lambda v, a: int(v) < a, parse_size),
}
SIZE_OPERATORS = ("over", "under")


def field_values(msg: InboundMessage, field: str, header: str | None) -> tuple[str, ...]:
    """The values of a field of the mail, folded to lower case."""
    if field == "header":
        values = msg.headers.get((header or "").lower(), ())
    elif field in ADDRESS_FIELDS:
        values = (msg.sender,) if field == "from" else getattr(msg, field)
    elif field == "subject":
        values = (msg.subject,)
    elif field == "body":
        values = (msg.text,)
    elif field == "attachment":
        values = tuple(a.name for a in msg.attachments)
    else:
        values = (str(msg.raw_size),)
    return tuple(v.casefold() for v in values if v)


@dataclass(frozen=True)
class FieldTest:
    """One operator applied to one field: true if any value matches any argument."""

    field: str
    header: str | None
    op: str
    args: tuple  # prepared arguments; for `exists`, (True,) or (False,)
    shown: tuple[str, ...]

    @property
    def label(self) -> str:
        name = f'header."{self.header}"' if self.field == "header" else self.field
        shown = self.shown[0] if len(self.shown) == 1 else "any of " + ", ".join(self.shown)
        return f"{name} {self.op} {shown}"

    def evaluate(self, msg: InboundMessage) -> tuple[bool, str]:
        values = field_values(msg, self.field, self.header)
        if self.op == "exists":
            ok = bool(values) == self.args[0]
            return ok, f"{self.label}: {'yes' if ok else 'no'}"
        test = OPERATORS[self.op][0]
        for value in values:
            for arg in self.args:
                if test(value, arg):
                    return True, f"{self.label}: yes ({_excerpt(value)})"
        return False, f"{self.label}: no"


def _excerpt(value: str) -> str:
    flat = " ".join(value.split())
    return repr(flat if len(flat) <= 50 else flat[:47] + "...")


@dataclass(frozen=True)
class AllOf:
    """True when every part is true (an empty AllOf is true)."""

    parts: tuple[Condition, ...]

    def evaluate(self, msg: InboundMessage) -> tuple[bool, str]:
        reasons = []
        for part in self.parts:
            ok, why = part.evaluate(msg)
            reasons.append(why)
            if not ok:
                return False, why if len(self.parts) == 1 else "; ".join(reasons)
        return True, "; ".join(reasons) or "matches every mail"


@dataclass(frozen=True)
class AnyOf:
    """True when at least one part is true."""

    parts: tuple[Condition, ...]

    def evaluate(self, msg: InboundMessage) -> tuple[bool, str]:
        reasons = []
        for part in self.parts:
            ok, why = part.evaluate(msg)
            if ok:
                return True, f"any: {why}"
            reasons.append(why)
        return False, "any: none of (" + " | ".join(reasons) + ")"


@dataclass(frozen=True)
class Not:
    """True when its part is false."""

    part: Condition

    def evaluate(self, msg: InboundMessage) -> tuple[bool, str]:
        ok, why = self.part.evaluate(msg)
        return not ok, f"not ({why})"
