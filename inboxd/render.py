"""Templates: jinja2 in a sandbox with undefined names as errors; template -> (subject, text, html).

The templates folder holds the set in the team's language; a subfolder named by a language tag
(`de/`, `pt-BR/`) holds a set in that language, which may lack templates: those come from the default set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from . import languages
from .charts import table_bars
from .errors import TemplateError

log = logging.getLogger(__name__)

REQUIRED_TEMPLATES = ("ack", "ack_urgent", "assigned", "new_request", "declined", "redirected", "forwarded",
                      "relay", "resolved", "deadline_changed", "command_ok", "command_error", "help",
                      "requester_reply", "low_rating", "owner_reminder", "deadline_notice", "escalation",
                      "status_update", "digest", "mail_held", "held_requests")
# The templates of mail to a requester, written in the requester's language; all other mail is the team's.
REQUESTER_TEMPLATES = ("ack", "ack_urgent", "declined", "redirected", "relay", "resolved", "deadline_changed",
                       "deadline_notice", "status_update")


@dataclass(frozen=True)
class Rendered:
    """A rendered mail: one subject line, a text body, maybe an HTML body."""

    subject: str
    text: str
    html: str | None = None


class _Compiled(jinja2.BytecodeCache):
    """Each template file compiled once per process, by its path and text: the teams sharing a folder share the
    code, and a worker taking over many teams at once does not compile the same templates for each (70 ms a team)."""

    def __init__(self) -> None:
        self.code: dict[str, bytes] = {}  # bounded by the template files there are; a changed text is a new checksum

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if (code := self.code.get(bucket.key)) is not None:
            bucket.bytecode_from_string(code)  # its checksum differs if the file changed: compiled afresh then

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self.code[bucket.key] = bucket.bytecode_to_string()


COMPILED = _Compiled()


class Renderer:
    """Renders the admin's templates; `NAME.txt` starts with a `Subject:` line, `NAME.html` is optional.

    An HTML template escapes every value it writes (subjects come from strangers); `bars` draws a bar
    chart as a table, which mail clients show where they show no SVG or data: images.
    """

    def __init__(self, directory: Path, tz: ZoneInfo, language: str = "en") -> None:
        if not directory.is_dir():
            raise TemplateError([f"{directory}: templates folder not found"])
        self.directory = directory
        self.tz = tz
        self.language = language  # the team's: the set in the folder itself
        self.sets = {language: directory} | {p.name: p for p in sorted(directory.iterdir())
                                             if p.is_dir() and p.name.lower() != language.lower()
                                             and languages.known(p.name)}
        self.languages = frozenset(self.sets)
        self.envs = {language: self._env(folder, language) for language, folder in self.sets.items()}
        self._fell_back: set[str] = set()  # each missing file is logged once

    def _env(self, folder: Path, language: str) -> SandboxedEnvironment:
        """The jinja2 environment of one set: its folder, and dates in its language."""
        env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined, bytecode_cache=COMPILED,
            keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False))
        env.filters["when"] = partial(languages.when, tz=self.tz, language=language)
        env.filters["day"] = partial(languages.day, tz=self.tz, language=language)
        env.filters["bars"] = bars
        return env

    def names(self, language: str | None = None) -> frozenset[str]:
        """The templates that exist in a set (the default set unless named)."""
        return frozenset(p.stem for p in self.sets[language or self.language].glob("*.txt"))

    def render(self, name: str, context: dict[str, Any], language: str | None = None) -> Rendered:
        """Render one template of a set (the default's where the set lacks it); TemplateError names file and line."""
        language = self._set_having(name, language or self.language)
        folder = self.sets[language]
        # Paths as text: pathlib interns each name afresh per mail, and that churn doubles the
        # interpreter's table of interned strings (+1.9 MB) after ~6,000 mails (bench/README.md, issue 15).
        path = f"{folder}/{name}.txt"
        try:
            text = self.envs[language].get_template(f"{name}.txt").render(context)
            html = self.envs[language].get_template(f"{name}.html").render(context) \
                if os.path.exists(f"{folder}/{name}.html") else None
        except jinja2.TemplateNotFound:
            raise TemplateError([f"{path}: template not found"]) from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError([f"{exc.filename or path}:{exc.lineno}: {exc.message}"]) from None
        except jinja2.UndefinedError as exc:
            raise TemplateError([f"{path}:{_line_of(exc)}: {exc.message}"]) from None
        except SecurityError as exc:
            raise TemplateError([f"{path}:{_line_of(exc)}: not allowed in a template: {exc}"]) from None
        except Exception as exc:  # a filter or test failing on its input
            raise TemplateError([f"{path}:{_line_of(exc)}: {type(exc).__name__}: {exc}"]) from None
        head, _, body = text.partition("\n")
        if not head.lower().startswith("subject:"):
            raise TemplateError([f"{path}:1: the first line must be 'Subject: ...'"])
        subject = " ".join(head[len("subject:"):].split())
        return Rendered(subject, body.strip("\n") + "\n", html)

    def _set_having(self, name: str, language: str) -> str:
        """The language's set if it has this template, else the default set (logged once per missing file)."""
        folder = self.sets.get(language)
        if language == self.language or (folder is not None and os.path.exists(f"{folder}/{name}.txt")):
            return language
        missing = f"{folder or self.directory / language}/{name}.txt"  # text: see render
        if missing not in self._fell_back:
            self._fell_back.add(missing)
            why = "missing in the set" if folder is not None else "there is no such set"
            log.warning("%s: %s: the default set's %s.txt is used instead", missing, why, name)
        return self.language

    def check(self, contexts: dict[str, list[dict[str, Any]]]) -> list[str]:
        """Render each template of each set against each of its sample contexts; every problem found, once."""
        problems = [f"{self.directory / name}.txt: required template is missing"
                    for name in REQUIRED_TEMPLATES if name not in self.names()]
        for folder in sorted(self.directory.iterdir()):  # templates no set reads
            if folder.is_dir() and folder.name not in self.sets and any(folder.glob("*.txt")):
                problems.append(f"{folder}/: the '{self.language}' set is the templates folder itself ([team] language)"
                                if folder.name.lower() == self.language.lower() else
                                f"{folder}/: not a language tag Babel knows (like de, fr or pt-BR): never read")
        for language in self.sets:
            for name in sorted(self.names(language)):
                for context in contexts.get(name, contexts["*"]):
                    try:
                        self.render(name, context, language)
                    except TemplateError as exc:
                        problems.extend(p for p in exc.problems if p not in problems)
        return problems

    def missing(self, names: Iterable[str]) -> list[str]:
        """Each of these templates (of the default set) a language set lacks, by file, for `check` to warn of."""
        wanted = sorted(set(names) & self.names())
        found = []
        for language, folder in self.sets.items():
            found += [f"{folder / name}.txt: missing in the '{language}' set (the default set has it): requesters "
                      f"answered in '{language}' get the default set's"
                      for name in wanted if language != self.language and name not in self.names(language)]
        return found

    def when(self, moment: datetime | None) -> str:
        """`Thursday 26 November 2026, 17:30` in the team's timezone and language."""
        return languages.when(moment, self.tz, self.language)


def bars(rows: list[tuple[str, float | None]], title: str, unit: str = "", top: float | None = None) -> Markup:
    """`{{ digest.picture.charts.requests | bars("Requests per week") }}`: a bar chart for mail."""
    return Markup(table_bars(title, [(str(label), value) for label, value in rows], unit, top))  # escapes its texts


def _line_of(exc: Exception) -> int:
    """The template line an exception was raised from, when jinja2 recorded it."""
    tb = exc.__traceback__
    line = 1
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith((".txt", ".html")):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
