"""Rules, their dispositions, and the pure first-match evaluation of a mail against them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..clock import Duration
from ..message import InboundMessage
from .conditions import Condition


@dataclass(frozen=True)
class Queue:
    """Track the mail as an item in a queue."""

    queue: str = "default"
    assign: str | None = None  # an address, "round-robin", "least-loaded", or None
    priority: str = "normal"
    due_in: Duration | None = None  # None: the service's default_due
    tags: tuple[str, ...] = ()
    acknowledge: str | None = "auto"  # a template name, "auto" (by priority), or None: no ack
    honour_requested_date: bool = False  # a date the requester names ("needed by Friday") may be promised
    language: str | None = None  # the template set the requester is answered in; None: Content-Language, the team's

    def ack_template(self) -> str | None:
        """The acknowledgement template to use, if any."""
        if self.acknowledge != "auto":
            return self.acknowledge
        return "ack_urgent" if self.priority in ("high", "urgent") else "ack"

    def __str__(self) -> str:
        parts = [f"queue {self.queue}", f"priority {self.priority}"]
        if self.assign:
            parts.append(f"assign {self.assign}")
        if self.due_in:
            parts.append(f"due in {self.due_in}")
        if self.honour_requested_date:
            parts.append("honouring a requested date")
        if self.tags:
            parts.append("tags " + ", ".join(self.tags))
        parts.append(f"acknowledge with {self.ack_template()}" if self.ack_template() else "no acknowledgement")
        if self.language:
            parts.append(f"in language {self.language}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Ignore:
    """Store the mail, do nothing else."""

    def __str__(self) -> str:
        return "ignore (stored, not tracked, not answered)"


@dataclass(frozen=True)
class Redirect:
    """Forward the original elsewhere and tell the requester where it went."""

    to: str
    template: str = "redirected"
    language: str | None = None

    def __str__(self) -> str:
        return f"redirect to {self.to} (requester told with template {self.template}{_in(self.language)})"


@dataclass(frozen=True)
class Decline:
    """Answer politely with the reason; no item."""

    reason: str
    template: str = "declined"
    language: str | None = None

    def __str__(self) -> str:
        return f"decline with template {self.template}{_in(self.language)}: {self.reason}"


def _in(language: str | None) -> str:
    return f" in language {language}" if language else ""


Disposition = Queue | Ignore | Redirect | Decline


@dataclass(frozen=True)
class Rule:
    """One admin rule: a condition and what to do with mail that meets it."""

    name: str
    where: str  # file:line of its [[rule]] header
    condition: Condition
    disposition: Disposition
    description: str = ""


@dataclass(frozen=True)
class TraceLine:
    """One rule tried against a mail."""

    rule: str
    where: str
    matched: bool
    why: str


@dataclass(frozen=True)
class Decision:
    """What the rules decided for a mail, and how."""

    rule: str | None
    disposition: Disposition
    trace: tuple[TraceLine, ...]

    def trace_json(self) -> list[dict]:
        """The trace as plain data for the event log."""
        return [{"rule": t.rule, "matched": t.matched, "why": t.why} for t in self.trace]


@dataclass(frozen=True)
class RuleSet:
    """Every rule in file order, and the files they came from."""

    rules: tuple[Rule, ...] = ()
    files: tuple[Path, ...] = field(default=())

    def decide(self, msg: InboundMessage) -> Decision:
        """First match wins; no match goes to the default queue."""
        trace = []
        for rule in self.rules:
            matched, why = rule.condition.evaluate(msg)
            trace.append(TraceLine(rule.name, rule.where, matched, why))
            if matched:
                return Decision(rule.name, rule.disposition, tuple(trace))
        return Decision(None, Queue("default"), tuple(trace))


