"""The sent log: which outbox mails the SMTP server took, written the moment it says 250.

Recording a delivery in the database takes the write turn, which the intake may hold for a
mail's whole transaction; a crash meanwhile sent the mail again on the next start (issue 13:
3 duplicates in 12 kills). One appended line is written at once, without waiting for anyone,
and the next start reads it before sending anything. A process killed after the write loses
nothing (the kernel has it); no fsync, so a power cut may still repeat the mail in flight.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)

KEEP_BYTES = 64 * 1024  # emptied once longer, when every mail in it is in the database too


class SentLog:
    """An append-only file of (Message-ID, refused recipients, when) lines, beside a SQLite database.

    Keyed by the mail's Message-ID, unique in the outbox, so a log left beside a new database
    never matches its mail.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.unrecorded: dict[str, str] = {}  # noted here, not yet committed to the database
        self._failing = False  # the last write failed: said once

    def note(self, message_id: str, refused: str, at: datetime) -> None:
        """The server took this mail at `at`: one write, before anything else."""
        line = (json.dumps([message_id, refused, at.isoformat()]) + "\n").encode()
        with self._lock:
            self.unrecorded[message_id] = refused  # this process never sends it again, whatever the disk says
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
            except OSError as exc:  # a full or read-only disk: the database record still follows
                (log.debug if self._failing else log.warning)(
                    "outbox: the sent log %s cannot be written (%s); a crash before the database records "
                    "a delivery may send that mail again", self.path, exc.strerror or exc)
                self._failing = True
            else:
                self._failing = False

    def recorded(self, message_id: str) -> None:
        """The database has this mail too; the file is emptied when it holds nothing else worth keeping."""
        with self._lock:
            self.unrecorded.pop(message_id, None)
            try:
                if not self.unrecorded and self.path.stat().st_size > KEEP_BYTES:
                    os.truncate(self.path, 0)
            except OSError:
                pass  # not written (see note) or not shrinkable now: emptied another time

    def taken(self) -> dict[str, tuple[str, datetime | None]]:
        """What the file says the server took: Message-ID -> (refused recipients, when; None in older lines)."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("outbox: the sent log %s cannot be read (%s); mail it names may go out again",
                        self.path, exc.strerror or exc)
            return {}
        entries: dict[str, tuple[str, datetime | None]] = {}
        for line in lines:
            try:
                message_id, refused, *at = json.loads(line)
                entries[str(message_id)] = (str(refused), datetime.fromisoformat(at[0]) if at else None)
            except (ValueError, TypeError):
                continue  # not a line of ours
        return entries

    def clear(self) -> None:
        """Empty the file: everything in it is in the database."""
        with self._lock:
            try:
                if self.path.is_file():
                    os.truncate(self.path, 0)
            except OSError:
                pass  # a full or read-only disk: the lines left are recognised as recorded next time
