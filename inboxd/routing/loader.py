"""Loading rules/*.toml: every problem found at once, as `file:line: rule: key: why`."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import languages
from ..clock import parse_duration
from ..domain import PRIORITIES
from ..errors import RulesError
from ..tomlfile import TomlFile, load_toml
from ..wording import did_you_mean
from .conditions import FIELDS, OPERATORS, SIZE_OPERATORS, AllOf, AnyOf, Condition, FieldTest, Not
from .rules import Decline, Disposition, Ignore, Queue, Redirect, Rule, RuleSet

RULE_KEYS = ("name", "description", "match", "queue", "assign", "priority", "due_in", "honour_requested_date",
             "tags", "acknowledge", "language", "ignore", "redirect", "decline")
QUEUE_KEYS = ("queue", "assign", "priority", "due_in", "honour_requested_date", "tags", "acknowledge")
DISPOSITIONS = ("queue", "ignore", "redirect", "decline")
ASSIGN_STRATEGIES = ("round-robin", "least-loaded")


@dataclass(frozen=True)
class Known:
    """What rules may refer to: queues, members and templates from the config, and the template sets."""

    queues: frozenset[str]
    members: frozenset[str]
    templates: frozenset[str]
    languages: frozenset[str] = frozenset({"en"})  # the default set's language and each set's folder


def _hint(word: str, choices: tuple[str, ...] | frozenset[str]) -> str:
    return did_you_mean(word, sorted(choices))


class _RuleReader:
    """Builds one rule from its table, collecting problems."""

    def __init__(self, doc: TomlFile, index: int, name: str, known: Known, problems: list[str]):
        self.doc, self.index, self.name, self.known, self.problems = doc, index, name, known, problems

    def fail(self, key: str, why: str) -> None:
        line = self.doc.line_of("rule", key, self.index)
        self.problems.append(f"{self.doc.path}:{line}: {self.name}: {key}: {why}")

    def condition(self, table: Any, path: str) -> Condition:
        """A `match` table: every entry must hold."""
        if not isinstance(table, dict):
            self.fail(path, f"must be a table of fields, got {table!r}")
            return AllOf(())
        parts: list[Condition] = []
        for key, value in table.items():
            where = f"{path}.{key}"
            if key in ("any", "all"):
                items = value if isinstance(value, list) else [value]
                sub = tuple(self.condition(item, where) for item in items)
                parts.append(AnyOf(sub) if key == "any" else AllOf(sub))
            elif key == "not":
                parts.append(Not(self.condition(value, where)))
            elif key == "header":
                if not isinstance(value, dict):
                    self.fail(where, 'write header."Name" = { operator = value }')
                    continue
                for header, ops in value.items():
                    parts.extend(self.tests("header", header, ops, f'{where}."{header}"'))
            elif key in FIELDS:
                parts.extend(self.tests(key, None, value, where))
            else:
                self.fail(where, f"unknown field {key!r}{_hint(key, FIELDS + ('any', 'all', 'not'))}")
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def tests(self, field: str, header: str | None, ops: Any, where: str) -> list[Condition]:
        if not isinstance(ops, dict) or not ops:
            self.fail(where, f"must be a table like {{ contains = [\"...\"] }}, got {ops!r}")
            return []
        allowed = SIZE_OPERATORS if field == "size" else tuple(o for o in OPERATORS if o not in SIZE_OPERATORS)
        tests: list[Condition] = []
        for op, raw in ops.items():
            if op == "exists":
                if not isinstance(raw, bool):
                    self.fail(f"{where}.exists", "must be true or false")
                    continue
                tests.append(FieldTest(field, header, op, (raw,), (str(raw).lower(),)))
                continue
            if op not in allowed:
                self.fail(f"{where}.{op}", f"unknown operator{_hint(op, allowed + ('exists',))}; "
                          f"{field} takes {', '.join(allowed + ('exists',))}")
                continue
            values = raw if isinstance(raw, list) else [raw]
            if not values or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
                self.fail(f"{where}.{op}", f"must be a string or a list of strings, got {raw!r}")
                continue
            prepare = OPERATORS[op][1]
            try:
                args = tuple(prepare(v) for v in values)
            except re.error as exc:
                self.fail(f"{where}.{op}", f"bad regular expression: {exc}")
                continue
            except ValueError as exc:
                self.fail(f"{where}.{op}", str(exc))
                continue
            tests.append(FieldTest(field, header, op, args, tuple(f"'{v}'" for v in values)))
        return tests

    def disposition(self, table: dict) -> Disposition | None:
        chosen = [key for key in DISPOSITIONS if key in table]
        if len(chosen) != 1:
            self.fail(chosen[1] if len(chosen) > 1 else "queue",
                      "needs exactly one of queue, ignore, redirect, decline"
                      + (f"; found {', '.join(chosen)}" if chosen else ""))
            return None
        kind = chosen[0]
        stray = [key for key in QUEUE_KEYS[1:] if key in table and kind != "queue"]
        for key in stray:
            self.fail(key, f"only applies to rules with queue, not {kind}")
        disposition = {"queue": self.queue, "ignore": self.ignore, "redirect": self.redirect,
                       "decline": self.decline}[kind](table)
        if "language" not in table:
            return disposition
        if isinstance(disposition, Ignore):
            self.fail("language", "only applies to rules that answer: queue, redirect, decline")
            return disposition
        return replace(disposition, language=self.language(table["language"])) if disposition else None

    def language(self, tag: Any) -> str | None:
        """A language with a template set, in the set's own spelling."""
        sets = {s.lower(): s for s in self.known.languages}
        if not isinstance(tag, str) or not languages.known(tag):
            self.fail("language", f"not a language tag Babel knows: {tag!r} (like \"de\", \"fr\" or \"pt-BR\")")
        elif tag.lower() not in sets:
            self.fail("language", f"no template set for {tag!r}: add a templates/{tag}/ folder "
                      f"(sets: {', '.join(sorted(self.known.languages))})")
        else:
            return sets[tag.lower()]
        return None

    def queue(self, table: dict) -> Queue | None:
        queue = table["queue"]
        if queue not in self.known.queues:
            self.fail("queue", f"unknown queue {queue!r}{_hint(str(queue), self.known.queues)}; "
                      f"queues are defined in config.toml [queues]")
        assign = table.get("assign")
        if assign is not None and assign not in ASSIGN_STRATEGIES and str(assign).lower() not in self.known.members:
            self.fail("assign", f"{assign!r} is neither round-robin, least-loaded nor a team member")
        priority = table.get("priority", "normal")
        if priority not in PRIORITIES:
            self.fail("priority", f"must be one of {', '.join(PRIORITIES)}, got {priority!r}"
                      f"{_hint(str(priority), PRIORITIES)}")
        due_in = None
        if "due_in" in table:
            try:
                due_in = parse_duration(table["due_in"])
            except ValueError as exc:
                self.fail("due_in", str(exc))
        honour = table.get("honour_requested_date", False)
        if not isinstance(honour, bool):
            self.fail("honour_requested_date", f"must be true or false, got {honour!r}")
        tags = table.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            self.fail("tags", f"must be a list of strings, got {tags!r}")
            tags = []
        ack = table.get("acknowledge", "auto")
        if ack is False:
            ack = None
        elif not isinstance(ack, str):
            self.fail("acknowledge", "must be a template name or false")
        elif ack != "auto":
            self.template("acknowledge", ack)
        return Queue(str(queue), str(assign).lower() if assign else None, str(priority),
                     due_in, tuple(tags), ack, honour is True)

    def ignore(self, table: dict) -> Ignore | None:
        if table["ignore"] is not True:
            self.fail("ignore", "must be true")
        return Ignore()

    def redirect(self, table: dict) -> Redirect | None:
        spec = self.subtable(table, "redirect", required=("to",), optional=("template",))
        if spec is None:
            return None
        to = str(spec["to"]).lower()
        if "@" not in to:
            self.fail("redirect.to", f"not an email address: {to!r}")
        return Redirect(to, self.template("redirect.template", spec.get("template", "redirected")))

    def decline(self, table: dict) -> Decline | None:
        spec = self.subtable(table, "decline", required=("reason",), optional=("template",))
        if spec is None:
            return None
        return Decline(str(spec["reason"]), self.template("decline.template", spec.get("template", "declined")))

    def subtable(self, table: dict, key: str, required: tuple, optional: tuple) -> dict | None:
        spec = table[key]
        if not isinstance(spec, dict):
            self.fail(key, f"must be a table like {{ {required[0]} = \"...\" }}")
            return None
        for name in spec:
            if name not in required + optional:
                self.fail(f"{key}.{name}", f"unknown key{_hint(name, required + optional)}")
        for name in required:
            if not isinstance(spec.get(name), str) or not spec.get(name):
                self.fail(f"{key}.{name}", "missing (required)")
                return None
        return spec

    def template(self, key: str, name: str) -> str:
        if name not in self.known.templates:
            self.fail(key, f"unknown template {name!r}{_hint(name, self.known.templates)}")
        return name


def load_rules(directory: Path, known: Known) -> RuleSet:
    """Load every rules/*.toml in name order; RulesError lists every problem."""
    if not directory.is_dir():
        raise RulesError([f"{directory}: rules folder not found"])
    problems: list[str] = []
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    files = tuple(sorted(directory.glob("*.toml")))
    for path in files:
        try:
            doc = load_toml(path, RulesError)
        except RulesError as exc:
            problems.extend(exc.problems)
            continue
        for key in doc.data:
            if key not in ("version", "rule"):
                problems.append(f"{doc.where('', key)}: {key}: unknown top-level key{_hint(key, ('version', 'rule'))}")
        if doc.data.get("version", 1) != 1:
            problems.append(f"{doc.where('', 'version')}: version: only version 1 is known")
        entries = doc.data.get("rule", [])
        if not isinstance(entries, list):
            problems.append(f"{doc.where('', 'rule')}: rule: write each rule as [[rule]]")
            continue
        for index, table in enumerate(entries):
            rule = _read_rule(doc, index, table, known, problems, seen)
            if rule:
                rules.append(rule)
    if problems:
        raise RulesError(problems)
    return RuleSet(tuple(rules), files)


def _read_rule(doc: TomlFile, index: int, table: dict, known: Known, problems: list[str],
               seen: dict[str, str]) -> Rule | None:
    where = doc.where("rule", None, index)
    name = table.get("name")
    reader = _RuleReader(doc, index, str(name or f"rule #{index + 1}"), known, problems)
    if not isinstance(name, str) or not name:
        reader.fail("name", "missing (every rule needs a unique name)")
    elif name in seen:
        reader.fail("name", f"duplicate rule name {name!r}, first defined at {seen[name]}")
    else:
        seen[name] = where
    for key in table:
        if key not in RULE_KEYS:
            reader.fail(key, f"unknown key{_hint(key, RULE_KEYS)}")
    condition = reader.condition(table.get("match", {}), "match")
    if "match" not in table:
        reader.fail("match", "missing (a rule without match would take every mail)")
    disposition = reader.disposition(table)
    if disposition is None or not isinstance(name, str):
        return None
    return Rule(name, where, condition, disposition, str(table.get("description", "")))
