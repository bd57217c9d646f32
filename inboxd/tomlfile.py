"""Reading TOML files with line numbers for keys, so errors can say file:line."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
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


def load_toml(path: Path, error: type[Exception]) -> TomlFile:
    """Parse a TOML file; a syntax error becomes `error` naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
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
