"""The rules between layers, read from the source: the deciders import no storage, outbox or network code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "inboxd"

# The modules that decide: they speak the domain's types and return plans (docs/architecture.md).
DECIDERS = ["caps", "guards", "routing", "threads", "replytext", "commands", "conversation", "intake", "promises",
            "adopt", "domain", "languages"]
# What deciding must never pull in, directly or through anything it imports.
STORAGE_AND_NETWORK = {
    "inboxd.models", "inboxd.queries", "inboxd.tracker", "inboxd.outbox", "inboxd.pipeline", "inboxd.sweep",
    "inboxd.source", "inboxd.daemon", "inboxd.digest", "inboxd.absence", "inboxd.servers",
    "peewee", "playhouse", "psycopg2", "imapclient", "imaplib", "smtplib", "socket", "ssl", "http", "urllib",
    "aiosmtpd", "pymap",
}


def _module_path(name: str) -> Path | None:
    """The file of an inboxd module, or None for anything outside the package."""
    if name != "inboxd" and not name.startswith("inboxd."):
        return None
    base = PACKAGE.parent.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.exists():
            return path
    return None


def _imports(name: str) -> set[str]:
    """Every module one inboxd module imports, anywhere in its body, as absolute names."""
    path = _module_path(name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.add(module)
            for alias in node.names:  # `from . import guards` imports a module, not a name
                if _module_path(f"{module}.{alias.name}") is not None:
                    found.add(f"{module}.{alias.name}")
    return found


def _closure(start: str) -> dict[str, str]:
    """Every module reachable from `start`, each with the inboxd module that imported it."""
    seen: dict[str, str] = {start: ""}
    todo = [start]
    while todo:
        current = todo.pop()
        for imported in _imports(current):
            parents = imported.split(".")
            # Importing inboxd.a.b runs inboxd/a/__init__.py first.
            for depth in range(1, len(parents) + 1):
                name = ".".join(parents[:depth])
                if name in seen:
                    continue
                seen[name] = current
                if _module_path(name) is not None:
                    todo.append(name)
    return seen


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in STORAGE_AND_NETWORK)


@pytest.mark.parametrize("decider", DECIDERS)
def test_deciders_import_no_storage_outbox_or_network(decider):
    reached = _closure(f"inboxd.{decider}")
    bad = {name: via for name, via in reached.items() if _forbidden(name)}
    assert not bad, f"inboxd.{decider} reaches " + ", ".join(f"{n} (imported by {v})" for n, v in sorted(bad.items()))


def test_the_check_itself_sees_imports():
    """The closure follows relative imports and packages, so a violation would show."""
    reached = _closure("inboxd.pipeline")
    assert {"inboxd.models", "peewee", "inboxd.routing", "inboxd.routing.rules"} <= set(reached)
    assert _forbidden("inboxd.models") and not _forbidden("inboxd.modelsx")


def test_only_the_tracker_writes_items_and_events():
    """Items and their history change in one module; the others ask it (docs/architecture.md)."""
    writes = ("Item.update(", "Item.insert", "Item.create(", "Event.create(", "Event.insert", "Event.update(",
              "create(Item", "create(Event", "Absence.create(", "create(Notice")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("tracker.py", "models.py"):  # models: schema migrations fill new columns
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(PACKAGE)}: {w}" for w in writes if w in text]
    assert not offenders
