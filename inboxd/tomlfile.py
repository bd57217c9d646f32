"""Reading TOML files with line numbers for keys, so errors can say file:line."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|\"[^\"]*\"))*)\s*=")


@dataclass(frozen=True)
class TomlFile:
    """A parsed TOML document that remembers where each key was written."""

    path: Path
    data: dict[str, Any]
    _lines: dict[tuple[str, int, str], int]
    _headers: dict[tuple[str, int], int]

    def line_of(self, table: str, key: str | None = None, index: int = 0) -> int:
        """Line of `key` in `[table]` (or the `index`-th `[[table]]`); the header line if unknown."""
        parts = key.replace('"', "").split(".") if key else []
        for end in range(len(parts), 0, -1):  # the most specific key that was written out
            line = self._lines.get((table, index, ".".join(parts[:end])))
            if line:
                return line
        if not table and parts and (parts[0], 0) in self._headers:  # a whole section at the top level
            return self._headers[(parts[0], 0)]
        return self._headers.get((table, index), 1)

    def where(self, table: str, key: str | None = None, index: int = 0) -> str:
        """`file:line` for a key, for error messages."""
        return f"{self.path}:{self.line_of(table, key, index)}"

    def folder(self, table: str, key: str) -> Path:
        """What a relative path in `[table] key` is relative to: this file's folder."""
        return self.path.parent


def load_toml(path: Path, error: type[Exception]) -> TomlFile:
    """Parse a TOML file; a syntax error becomes `error` naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors write one) is no TOML error
    except OSError as exc:
        raise error([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise error([f"{path}: not UTF-8 text"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        line = match.group(1) if match else str(max(1, len(text.splitlines()))) if "end of document" in str(exc) \
            else "1"
        raise error([f"{path}:{line}: invalid TOML: {exc}"]) from None
    lines, headers = _index_lines(text)
    return TomlFile(path, data, lines, headers)


def _index_lines(text: str) -> tuple[dict[tuple[str, int, str], int], dict[tuple[str, int], int]]:
    """Map (table, array index, dotted key) and table headers to their line numbers."""
    lines: dict[tuple[str, int, str], int] = {}
    headers: dict[tuple[str, int], int] = {}
    counts: dict[str, int] = {}
    table, index = "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = header.group(2).replace(" ", "")
            if header.group(1) == "[[":
                counts[table] = counts.get(table, -1) + 1
            index = counts.get(table, 0)
            headers.setdefault((table, index), number)
            continue
        key = _KEY.match(line)
        if key:
            dotted = re.sub(r"\s*\.\s*", ".", key.group(1)).replace('"', "")
            lines.setdefault((table, index, dotted), number)
            lines.setdefault((table, index, dotted.split(".")[0]), number)
    return lines, headers


def _lookup(data: dict[str, Any], table: str, key: str | None) -> bool:
    """Whether `[table] key` (or the table itself, without a key) is written in `data`."""
    for part in [*(table.split(".") if table else []), *([key] if key else [])]:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


WHOLE_TABLES = ("queues",)  # a team's own replaces the shared one: its names are the team's members'


@dataclass(frozen=True)
class Layered:
    """A team's file over the shared config: a key the team writes wins; errors name the file that wrote it."""

    top: TomlFile  # the team's file
    under: TomlFile  # the shared config

    @property
    def path(self) -> Path:
        return self.top.path

    @cached_property
    def data(self) -> dict[str, Any]:
        return _merged(self.under.data, self.top.data, "")

    def origin(self, table: str, key: str | None = None) -> TomlFile:
        """The file a key comes from: the team's if it writes it (or the key is nowhere), else the shared one."""
        return self.under if not _lookup(self.top.data, table, key) and _lookup(self.under.data, table, key) \
            else self.top

    def where(self, table: str, key: str | None = None, index: int = 0) -> str:
        return self.origin(table, key).where(table, key, index)

    def folder(self, table: str, key: str) -> Path:
        """What a relative path in `[table] key` is relative to: the folder of the file that wrote it."""
        return self.origin(table, key).path.parent


def _merged(under: dict[str, Any], top: dict[str, Any], table: str) -> dict[str, Any]:
    """`top` over `under`, table by table and key by key (WHOLE_TABLES taken whole)."""
    merged = dict(under)
    for key, value in top.items():
        name = f"{table}.{key}" if table else key
        both_tables = isinstance(value, dict) and isinstance(under.get(key), dict)
        merged[key] = _merged(under[key], value, name) if both_tables and name not in WHOLE_TABLES else value
    return merged
