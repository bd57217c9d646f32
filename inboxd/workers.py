"""Several `inboxd run` workers on one PostgreSQL database: each team's mailbox watched by the worker holding its lease.

Every RENEW seconds the worker keeps its fair share of the leases `mailbox:<label>` (leases.keep_share);
a lease gained starts that team's `Daemon` in a thread of its own (as fleet.py does), a lease missing
from `held()` stops that team's loop at once, and each mail's transaction is preceded by a look at
`held()` (Daemon.leased), so a team's mail is never written by a worker that lost its lease. The
team's instance lock is still taken, waiting: a worker that lost the lease finishes its mail first.
SIGTERM gives every lease back, so that the other workers take over within one round.

The worker's one delivery process sends every team's outbox, held here or not (delivery.py): each
mail is claimed under a row lock, so all workers drain the outbox at once and none sends a mail twice.
Its reports go to the ledger of their team's daemon if it runs here; the others are logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, ItemsView, Iterable, Iterator, Mapping, Sequence, ValuesView
from contextvars import copy_context
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import peewee as pw

from . import http
from .config import Config
from .daemon import Daemon
from .delivery import Delivery, ProcessDelivery, SharedDelivery
from .errors import InboxdError
from .health import Health
from .instance import InstanceLock, LockSession
from .leases import RENEW_SECONDS, TTL_SECONDS, LeaseLost, Leases, holder_host_pid, keep_share, lease_name
from .models import Lease, Worker, db, use_team
from .outbox import Ledger
from .systemd import Notifier

log = logging.getLogger(__name__)
OPEN_DAEMON = partial(Daemon, database_open=True)  # a team's daemon, the database being open in this process


def changes(running: Collection[str], held: Collection[str]) -> tuple[list[str], list[str]]:
    """The leases whose team to start (held, not running) and to stop (running, no longer held)."""
    return sorted(set(held) - set(running)), sorted(set(running) - set(held))


class _Healths(Mapping[str, Health]):
    """The health of the teams this worker serves now, for /healthz and /metrics: replaced whole, never changed
    in place, so a reader in the HTTP thread never sees it change under it."""

    def __init__(self) -> None:
        self.now: dict[str, Health] = {}
        self._changing = threading.Lock()  # two teams' threads may start or end at once

    def add(self, key: str, health: Health) -> None:
        with self._changing:
            self.now = self.now | {key: health}

    def drop(self, key: str) -> None:
        with self._changing:
            self.now = {k: health for k, health in self.now.items() if k != key}

    def __getitem__(self, key: str) -> Health:
        return self.now[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.now)

    def __len__(self) -> int:
        return len(self.now)

    def items(self) -> ItemsView[str, Health]:
        return self.now.items()

    def values(self) -> ValuesView[Health]:
        return self.now.values()


class Beat(Notifier):
    """What a team's daemon would tell systemd, kept for the worker: when its loop last turned."""

    def __init__(self) -> None:
        super().__init__(None)
        self.turned: float | None = None  # time.monotonic() of the last turn; None until the loop has started

    def ready(self, status: str) -> None:
        self.turned = time.monotonic()

    def alive(self) -> None:
        self.turned = time.monotonic()


def turning(beats: Iterable[Beat], now: float, window: float) -> bool:
    """Every team loop that has started turned within `window` seconds: a hung one holds the watchdog's ping back."""
    return all(now - beat.turned < window for beat in beats if beat.turned is not None)


class _Team:
    """One team this worker serves: its thread, and its daemon once the thread has made it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.beat = Beat()
        self.daemon: Daemon | None = None
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def stop(self) -> None:
        self.stopping.set()
        if self.daemon is not None:
            self.daemon.stop()


class Workers:
    """This worker's part of the teams: the daemons of the mailboxes whose lease it holds, started and stopped
    as the leases come and go. The database is open already: each team's daemon is made with it as it is."""

    def __init__(self, configs: Sequence[Config], leases: Leases,
                 make: Callable[[Config], Daemon] = OPEN_DAEMON,
                 notifier: Notifier | None = None, renew_seconds: float = RENEW_SECONDS,
                 delivery: bool = False) -> None:
        """`delivery`: one delivery process for every team's outbox (`inboxd run`); else each daemon has its own."""
        self.configs = {lease_name(config): config for config in configs}
        self.leases, self.make, self.renew_seconds = leases, make, renew_seconds
        self.notifier = notifier or Notifier.from_environment()
        self.teams: dict[str, _Team] = {}  # by lease name: the teams started and not yet ended
        self.healths = _Healths()
        self.stopping = threading.Event()
        self.failure: BaseException | None = None  # what ended a team's loop unexpectedly: the process stops
        self.given_up: set[str] = set()  # teams stopped here for what a retry would not cure: left to the others
        self.ledgers: dict[str, Ledger] = {}  # by team key: the daemons running here, for the delivery's reports
        self.delivery: Delivery | None = ProcessDelivery(configs, self.ledgers.get) if delivery else None
        first = configs[0].database_url
        self.locks = LockSession(first) if first.startswith("postgres") else None  # every team's lock, one session

    def stop(self) -> None:
        """Stop every team and give the leases back; `run` returns."""
        self.stopping.set()

    def request_reload(self) -> None:
        for running in list(self.teams.values()):
            if running.daemon is not None:
                running.daemon.request_reload()

    def run(self, standby: bool = False) -> None:
        """Take part until stop(): keep this worker's share of the mailboxes, serving those it holds."""
        first = next(iter(self.configs.values()))
        with http.serving(first.http_listen, self.healths, list(self.configs.values()), labelled=True):
            try:
                if self.delivery is not None:
                    self.delivery.start()
                self.round()
                self.notifier.ready(f"worker {self.leases.holder}: {len(self.teams)} of {len(self.configs)} "
                                    f"mailbox(es)")
                # The signal handlers run in this thread, between its waits.
                while not self.stopping.wait(self.renew_seconds) and self.failure is None:
                    self.round()
                    self._feed_watchdog()
            finally:
                self.notifier.stopping()
                self._end_all()
        if self.failure is not None:
            raise self.failure

    def _feed_watchdog(self) -> None:
        """Ping systemd's watchdog while the delivery lives and every team's loop turns (else a restart helps)."""
        window = (self.notifier.watchdog_seconds or 0) / 2  # a loop turns at least every minute; WatchdogSec=5min
        beats = [running.beat for running in list(self.teams.values()) if not running.stopping.is_set()]
        if turning(beats, time.monotonic(), window) and (self.delivery is None or self.delivery.alive()):
            self.notifier.alive()

    def round(self) -> None:
        """One round: keep the share of the leases, then start and stop teams to match what is held."""
        if given_up := self.given_up & self.leases.held():
            self.leases.release(given_up)
        held = keep_share(self.leases, [name for name in self.configs if name not in self.given_up])
        self._reap()
        start, stop = changes(self.teams, held)
        for name in stop:
            log.info("worker: the lease of %s is gone: its team stops here", name)
            self.teams[name].stop()
        for name in start:
            self._start(name)
        if start or stop:
            keys = sorted(t.config.team.key for t in self.teams.values() if not t.stopping.is_set())
            log.info("worker %s: serving %s", self.leases.holder, ", ".join(keys) or "no team")
            self.notifier.status(f"worker {self.leases.holder}: {len(keys)} of {len(self.configs)} mailbox(es): "
                                 f"{', '.join(keys) or 'none'}")

    def _start(self, name: str) -> None:
        running = self.teams[name] = _Team(self.configs[name])
        running.thread = threading.Thread(target=copy_context().run, args=(self._serve, name, running), daemon=True,
                                          name=f"team-{running.config.team.key}")
        running.thread.start()

    def _serve(self, name: str, running: _Team) -> None:
        """One team's loop, in its own thread, while this worker holds its lease."""
        config = running.config
        use_team(config.team.key)
        lock = InstanceLock(config, session=self.locks)
        try:
            daemon = self.make(config)
            daemon.notifier = running.beat  # the worker speaks to systemd, not each team it serves for a while
            daemon.worker = self.leases.holder
            daemon.leased = lambda: name in self.leases.held()
            if self.delivery is not None:
                daemon.delivery = SharedDelivery(self.delivery)  # its mail goes with every team's
                self.ledgers[config.team.key] = daemon.ledger
            running.daemon = daemon
            if running.stopping.is_set() or not lock.acquire(standby=True, stop=running.stopping):
                return
            self.healths.add(config.team.key, daemon.health)
            daemon.watch()
        except LeaseLost as exc:
            log.info("%s", exc)
        except InboxdError as exc:  # refused logins, a mailbox awaiting adopt: let another worker try it
            log.error("team %s has stopped here (%s); its lease is left to the other workers", config.team.key, exc)
            self.given_up.add(name)  # the next round gives its lease back (the leases are the main thread's)
        except BaseException as exc:
            log.exception("team %s: its loop failed; inboxd stops, for systemd to start it again", config.team.key)
            self.failure = exc
            self.stop()
        finally:
            self.ledgers.pop(config.team.key, None)
            lock.release()
            db.close()  # this thread's connection: a thread that ends would leave it open until collected
            self.healths.drop(config.team.key)

    def _reap(self) -> None:
        """Forget the teams whose thread has ended (their lease lost, or given back)."""
        for name in [name for name, running in self.teams.items()
                     if running.thread is not None and not running.thread.is_alive()]:
            del self.teams[name]

    def _end_all(self) -> None:
        """Every team stops and sends what it has; then the leases go back, for the others to take at once."""
        for running in self.teams.values():
            running.stop()
        for running in self.teams.values():
            if running.thread is not None:
                running.thread.join()
        self.teams.clear()
        if self.delivery is not None:
            self.delivery.stop()  # sends what is due, of every team, then ends
        if self.locks is not None:
            self.locks.close()
        self.leases.close()


@dataclass(frozen=True)
class Seen:
    """A live worker as the database knows it (`inboxd workers`): its name says its host and pid (leases.new_holder)."""

    name: str
    started_at: datetime
    last_seen: datetime  # its last round: its row's expiry less the TTL it asked for
    teams: tuple[str, ...]  # the keys of the teams whose mailbox lease it holds

    @property
    def host(self) -> str:
        return holder_host_pid(self.name)[0]

    @property
    def pid(self) -> int | None:
        return holder_host_pid(self.name)[1]


def roster(configs: Sequence[Config]) -> tuple[list[Seen], list[str]]:
    """The live workers with the teams each holds, and the teams no live lease covers; from the database's clock."""
    teams = {lease_name(config): config.team.key for config in configs}
    live = Lease.expires_at > pw.fn.now()
    holding: dict[str, list[str]] = {}
    for lease in Lease.select().where(live & Lease.name.in_(list(teams))).order_by(Lease.name):
        holding.setdefault(lease.holder, []).append(teams[lease.name])
    seen = [Seen(w.name, w.started_at, w.expires_at - timedelta(seconds=TTL_SECONDS), tuple(holding.get(w.name, ())))
            for w in Worker.select().where(Worker.expires_at > pw.fn.now()).order_by(Worker.started_at)]
    held = {key for keys in holding.values() for key in keys}
    return seen, [key for key in teams.values() if key not in held]
