"""Templates: jinja2 in a sandbox with undefined names as errors; template -> (subject, text, html)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from .charts import table_bars
from .errors import TemplateError

REQUIRED_TEMPLATES = ("ack", "ack_urgent", "assigned", "new_request", "declined", "redirected", "forwarded",
                      "relay", "resolved", "deadline_changed", "command_ok", "command_error", "help",
                      "requester_reply", "low_rating", "owner_reminder", "deadline_notice", "escalation",
                      "status_update", "digest", "mail_held", "held_requests")


@dataclass(frozen=True)
class Rendered:
    """A rendered mail: one subject line, a text body, maybe an HTML body."""

    subject: str
    text: str
    html: str | None = None


class Renderer:
    """Renders the admin's templates; `NAME.txt` starts with a `Subject:` line, `NAME.html` is optional.

    An HTML template escapes every value it writes (subjects come from strangers); `bars` draws a bar
    chart as a table, which mail clients show where they show no SVG or data: images.
    """

    def __init__(self, directory: Path, tz: ZoneInfo) -> None:
        if not directory.is_dir():
            raise TemplateError([f"{directory}: templates folder not found"])
        self.directory = directory
        self.tz = tz
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(directory)), undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False))
        self.env.filters["when"] = self.when
        self.env.filters["day"] = self.day
        self.env.filters["bars"] = bars

    def names(self) -> frozenset[str]:
        """The templates that exist."""
        return frozenset(p.stem for p in self.directory.glob("*.txt"))

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        """Render one template; TemplateError names the file and line on any problem."""
        # Paths as text: pathlib interns each name afresh per mail, and that churn doubles the
        # interpreter's table of interned strings (+1.9 MB) after ~6,000 mails (bench/README.md, issue 15).
        path = f"{self.directory}/{name}.txt"
        try:
            text = self.env.get_template(f"{name}.txt").render(context)
            html = self.env.get_template(f"{name}.html").render(context) \
                if os.path.exists(f"{self.directory}/{name}.html") else None
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

    def check(self, contexts: dict[str, list[dict[str, Any]]]) -> list[str]:
        """Render each template against each of its sample contexts; every problem found, once."""
        problems = [f"{self.directory / name}.txt: required template is missing"
                    for name in REQUIRED_TEMPLATES if name not in self.names()]
        for name in sorted(self.names()):
            for context in contexts.get(name, contexts["*"]):
                try:
                    self.render(name, context)
                except TemplateError as exc:
                    problems.extend(p for p in exc.problems if p not in problems)
        return problems

    def when(self, moment: datetime | None) -> str:
        """`Thursday 26 November 2026, 17:30` in the team's timezone."""
        if moment is None:
            return "not set"
        local = moment.astimezone(self.tz)
        return f"{local:%A} {local.day} {local:%B %Y, %H:%M}"

    def day(self, moment: datetime | None) -> str:
        """`Thursday 26 November` in the team's timezone."""
        if moment is None:
            return "not set"
        local = moment.astimezone(self.tz)
        return f"{local:%A} {local.day} {local:%B}"


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
