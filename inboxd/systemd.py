"""Telling systemd how the daemon is (sd_notify(3)): READY, STATUS and WATCHDOG datagrams to $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages when systemd asked for them (Type=notify, WatchdogSec=); otherwise does nothing."""

    def __init__(self, address: str | None, watchdog_seconds: float | None = None) -> None:
        # "@name" is an abstract socket: its name starts with a NUL byte
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_seconds = watchdog_seconds
        self._pinged = float("-inf")  # time.monotonic() of the last WATCHDOG=1
        self._status = ""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd's variables describe: NOTIFY_SOCKET, and WATCHDOG_USEC for this process."""
        usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())  # the watchdog may be meant for a parent process
        return cls(environ.get("NOTIFY_SOCKET") or None,
                   int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and ours else None)

    def ready(self, status: str) -> None:
        """Start-up is done: `systemctl start` returns."""
        self._status = status
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, text: str) -> None:
        """What the daemon is doing now, for `systemctl status`; sent only when it changes."""
        if text != self._status:
            self._status = text
            self._send(f"STATUS={text}")

    def alive(self) -> None:
        """The watchdog ping; the caller calls it only when the daemon really works. At most 4 per interval."""
        if self.watchdog_seconds is None:
            return
        now = time.monotonic()
        if now - self._pinged >= self.watchdog_seconds / 4:
            self._pinged = now
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping: sending what is queued")

    def _send(self, message: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
                sock.sendto(message.encode(), self.address)  # never blocks the loop, even if nobody reads
        except OSError as exc:  # systemd gone, restarting or behind: nothing to tell, and no reason to stop
            log.debug("sd_notify to %r failed: %s", self.address, exc)


class TeamsNotifier:
    """One notifier for the teams of one process: READY once every team has started, a STATUS naming each
    team, and the watchdog fed only while every team's loop turns (a team whose loop has ended on purpose
    no longer counts; the STATUS and /healthz say it)."""

    def __init__(self, notifier: Notifier, keys: Sequence[str]) -> None:
        self.notifier = notifier
        self.teams = {key: TeamNotifier(self, key) for key in keys}
        self._lock = threading.Lock()
        self._ready = False

    def _changed(self) -> None:
        """A team said something: tell systemd what the teams say together (under the lock)."""
        summary = f"{len(self.teams)} teams: " + "; ".join(f"{t.key} {t.said}" for t in self.teams.values())
        if not self._ready and all(t.started for t in self.teams.values()):
            self._ready = True
            self.notifier.ready(summary)
        elif self._ready:
            self.notifier.status(summary)

    def _alive(self) -> None:
        """A team's loop turned: ping if every team still watching has turned within half the interval."""
        window = (self.notifier.watchdog_seconds or 0) / 2
        now = time.monotonic()
        if self._ready and all(now - t.turned < window for t in self.teams.values() if not t.ended):
            self.notifier.alive()

    def stopping(self) -> None:
        """The process stops: every team's loop ends."""
        self.notifier.stopping()


class TeamNotifier:
    """What one team's daemon tells systemd (the methods of `Notifier`), said through the process's `TeamsNotifier`."""

    def __init__(self, teams: TeamsNotifier, key: str) -> None:
        self.teams, self.key = teams, key
        self.started = self.ended = False
        self.said = "starting"
        self.turned = float("-inf")  # time.monotonic() of the loop's last turn

    def ready(self, status: str) -> None:
        with self.teams._lock:
            self.started, self.said, self.turned = True, status, time.monotonic()
            self.teams._changed()

    def status(self, text: str) -> None:
        with self.teams._lock:
            self.said = text
            self.teams._changed()

    def alive(self) -> None:
        with self.teams._lock:
            self.turned = time.monotonic()
            self.teams._alive()

    def stopping(self) -> None:
        """This team's loop has ended: it no longer holds back READY or the watchdog."""
        with self.teams._lock:
            self.started = self.ended = True
            self.said = "stopped"
            self.teams._changed()
