"""Every team of a deployment served by one `inboxd run`: a `Daemon` per team, each watching in a thread of its own.

The process has one set of signal handlers, one systemd notifier and one `[http] listen`; each team keeps
its own IMAP source, pipeline, jobs, delivery process, health file and instance lock. A team whose loop
ends for what a restart would not cure (its logins refused three times, its mailbox awaiting `inboxd
adopt`) stops alone: the others go on, and /healthz and systemd's STATUS name it. Anything else that ends
a team's loop stops the whole process (exit 1), so that systemd restarts it, as it would one team's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from contextvars import copy_context

from . import http
from .adopt import FirstContact
from .daemon import Daemon
from .errors import InboxdError, LoginsRefused
from .instance import InstanceLock
from .models import use_team
from .systemd import Notifier, TeamsNotifier

log = logging.getLogger(__name__)
TEAM_STOPS = (LoginsRefused, FirstContact)  # what ends one team's loop and not the process


class Fleet:
    """The daemons of several teams in one process, started and stopped together."""

    def __init__(self, daemons: Sequence[Daemon], notifier: Notifier | None = None) -> None:
        self.daemons = daemons
        self.notifier = TeamsNotifier(notifier or Notifier.from_environment(), [d.config.team.key for d in daemons])
        for daemon in daemons:
            daemon.notifier = self.notifier.teams[daemon.config.team.key]
        self.stopping = threading.Event()
        self.stopped: dict[str, InboxdError] = {}  # the teams whose loop ended on its own, and why
        self.failure: BaseException | None = None  # what ended a team's loop unexpectedly: the process stops
        self._ended = threading.Event()  # a team's loop has ended

    def stop(self) -> None:
        """Every team stops reading, sends what is queued, and `run` returns."""
        if not self.stopping.is_set():
            self.notifier.stopping()
        self.stopping.set()
        for daemon in self.daemons:
            daemon.stop()

    def request_reload(self) -> None:
        """Every team reloads its rules and templates."""
        for daemon in self.daemons:
            daemon.request_reload()

    def run(self, standby: bool = False) -> None:
        """Watch every team's mailbox until stop(); with `standby`, each team waits for its own lock in its thread
        (an older inboxd still on one team's mailbox holds back that team only); without, any held lock refuses."""
        locks = {daemon.config.team.key: InstanceLock(daemon.config) for daemon in self.daemons}
        try:
            if not standby:
                for lock in locks.values():
                    lock.acquire()
            first = self.daemons[0]
            with http.serving(first.config.http_listen, {d.config.team.key: d.health for d in self.daemons},
                              [d.config for d in self.daemons], first.clock):
                self._watch(locks if standby else {})
        finally:
            for lock in locks.values():
                lock.release()
        if self.failure is not None:
            raise self.failure
        if len(self.stopped) == len(self.daemons):
            refused = any(isinstance(why, LoginsRefused) for why in self.stopped.values())
            lines = "\n".join(f"{key}: {why}" for key, why in self.stopped.items())
            raise (LoginsRefused if refused else InboxdError)(f"every team has stopped:\n{lines}")

    def _watch(self, waiting: dict[str, InstanceLock]) -> None:
        threads = [threading.Thread(target=copy_context().run, args=(self._serve, daemon, waiting.get(
            daemon.config.team.key)), daemon=True, name=f"team-{daemon.config.team.key}") for daemon in self.daemons]
        for thread in threads:
            thread.start()
        try:
            # Waits with a timeout: the signal handlers run in this thread, between its waits.
            while any(thread.is_alive() for thread in threads):
                self._ended.wait(1.0)
                self._ended.clear()
        finally:
            self.stop()
            for thread in threads:
                thread.join()

    def _serve(self, daemon: Daemon, waiting: InstanceLock | None) -> None:
        """One team's loop, in its own thread, until it stops; first standing by for its lock, if `waiting`."""
        key = daemon.config.team.key
        use_team(key)
        try:
            if waiting is not None and not waiting.acquire(standby=True, stop=self.stopping):
                return
            daemon.watch()
        except TEAM_STOPS as exc:
            self.stopped[key] = exc
            self.notifier.teams[key].status(f"stopped: {str(exc).splitlines()[0][:200]}")
            others = len(self.daemons) - len(self.stopped)
            log.error("team %s has stopped (%s): %s", key, f"the other {others} team(s) go on" if others else
                      "no team is left", exc)
        except BaseException as exc:
            log.exception("team %s: its loop failed; inboxd stops, for systemd to start it again", key)
            self.failure = exc
            self.stop()
        finally:
            self._ended.set()
