"""How log lines look: timestamped for a terminal, plain with a priority under journald, or JSON for log shippers."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

NOISY = ("imapclient", "peewee", "mail.log", "aiosmtpd", "asyncio")
# sd-daemon(3): a line starting "<N>" is stored by journald with priority N (and without the prefix)
PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _Handler(logging.StreamHandler):
    """inboxd's own handler on the root logger, so that its format can change once the config is read."""


def under_journald(stream: TextIO) -> bool:
    """True when `stream` is the journal stream systemd connected (JOURNAL_STREAM names its device and inode)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        found = os.fstat(stream.fileno())
        return (found.st_dev, found.st_ino) == (int(device), int(inode))
    except (ValueError, OSError):  # not set, malformed, or a stream without a file (a test's capture)
        return False


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class JournalFormatter(logging.Formatter):
    """Wraps another formatter: each line gets the record's priority, so journald keeps the level."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{PRIORITIES.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).splitlines())


def formatter(style: str, journald: bool) -> logging.Formatter:
    """The formatter for `[log] format` (text or json); journald adds its own timestamp, so text has none there."""
    if style == "json":
        inner: logging.Formatter = JsonFormatter()
    elif journald:
        inner = logging.Formatter("%(levelname)s %(message)s")
    else:
        inner = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    return JournalFormatter(inner) if journald else inner


def setup(verbose: bool) -> None:
    """Log to stderr as text; left alone if something else (a test harness) has set up logging already."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(_Handler(sys.stderr))
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
    use("text")
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def use(style: str) -> None:
    """Switch inboxd's handler to `style` (the config's `[log] format`)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _Handler):
            handler.setFormatter(formatter(style, under_journald(handler.stream)))


class _TeamNamed(logging.Filter):
    """Each line starts with the key of the team whose thread logged it (one process serving several teams)."""

    def __init__(self, team: Callable[[], str]) -> None:
        super().__init__()
        self.team = team

    def filter(self, record: logging.LogRecord) -> bool:
        key = self.team()
        if key and not getattr(record, "team_named", False):
            record.msg, record.team_named = f"{key}: {record.msg}", True
        return True


def name_teams(team: Callable[[], str]) -> None:
    """From now on each line of inboxd's handler names the team `team()` says the logging thread works for."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _Handler):
            handler.addFilter(_TeamNamed(team))
