"""Leases on PostgreSQL: which worker watches which mailbox, shared fairly; a timed job run once per moment.

A worker holds a lease only until its own deadline, counted on its own clock from the moment it
sent its last successful renewal: the database lets another worker take the lease no earlier than
TTL after that, so a worker that cannot renew stops (`held()` drops the lease) before anyone else
can start (self-fencing). A worker checks `held()` right before each action on a mailbox.

The numbers, from the goal "a dead worker's mailboxes are watched again within 10 s":

- a lease outlives its holder's last renewal by at most TTL, and the others look every RENEW
  seconds, so a takeover comes at most TTL + RENEW (+ one round trip) after the death:
  6 + 2 = 8 s, leaving 2 s for a slow round;
- the holder stops MARGIN before TTL (5 s after its last renewal): two renewals in a row may fail
  (at +2 s and +4 s) before it lets go, and the margin covers the two clocks' rates;
- each statement gives up after QUERY seconds (under RENEW): a frozen connection is a failed
  round, not a worker stuck while its deadline passes.

`RowLeases` (the recommended one, see docs/architecture.md "Leases") keeps a row per lease with
the database's `now()` as the only clock; `AdvisoryLeases` holds session advisory locks on a
connection of its own, which the server drops when it sees the connection gone, and sets the
session's `idle_session_timeout` to TTL so that it also sees a frozen one. `FakeLeases` is the
same contract in memory, for tests of what uses it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import select
import socket
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from .errors import InboxdError
from .models import JobRun

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

TTL_SECONDS = 6.0
RENEW_SECONDS = 2.0
MARGIN_SECONDS = 1.0
QUERY_SECONDS = 1.5


def boot_clock() -> float:
    """Seconds on a clock that never goes back and counts time suspended (a monotonic clock stops then)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def new_holder() -> str:
    """A name for this worker, unique to this process's life (a restarted worker is a new holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def holder_host_pid(holder: str) -> tuple[str, int | None]:
    """The host and the pid a holder's name says (`new_holder`); None for a pid it does not give."""
    parts = holder.rsplit(":", 2)
    return parts[0], int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def lease_name(config: Config) -> str:
    """The lease of a team's mailbox."""
    return f"mailbox:{config.mailbox.label}"


class LeaseLost(InboxdError):
    """This worker no longer holds the lease it was working under: it stops before writing anything more."""


class Leases(Protocol):
    """One worker's leases among named ones (`mailbox:<label>`)."""

    holder: str

    def announce(self) -> tuple[int, int]:
        """Say this worker is alive; how many workers are, and how many of them come before this one in their
        order (its rank); (0, 0): the database cannot be reached now."""

    def take(self, names: Iterable[str], most: int) -> frozenset[str]:
        """Take at most `most` of the free leases among `names`; those taken."""

    def renew(self) -> frozenset[str]:
        """Extend every lease held; those still held."""

    def held(self) -> frozenset[str]:
        """The leases this worker may act on now: each until its deadline, renewed or not."""

    def release(self, names: Iterable[str]) -> None:
        """Give these up: `held()` drops them before the database frees them."""

    def close(self) -> None:
        """Give everything up and leave."""


def fair_share(total: int, workers: int, rank: int) -> int:
    """How many of `total` leases the live worker of this `rank` (0…workers-1) may hold: the shares add up to
    `total` (rounding every share up would leave a worker idle: 4 mailboxes over 3 workers, 2/2/0)."""
    whole, rest = divmod(total, max(workers, 1))
    return whole + (rank < rest)


def keep_share(leases: Leases, names: Collection[str]) -> frozenset[str]:
    """One round of a worker: say it is alive, renew, give back what is over its share, take free ones up to it."""
    live, rank = leases.announce()
    leases.renew()
    if not live:  # the database cannot say who else is alive: keep what is held until its deadline
        return leases.held()
    share, held = fair_share(len(names), live, rank), sorted(leases.held())
    if len(held) > share:
        leases.release(held[share:])
    elif len(held) < share:
        leases.take([n for n in sorted(names) if n not in held], share - len(held))
    return leases.held()


class _Deadlines:
    """What a worker holds, each lease until a moment of its own clock."""

    def __init__(self, clock: Callable[[], float], margin: float) -> None:
        self.clock, self.margin = clock, margin
        self._until: dict[str, float] = {}  # replaced whole, never changed in place: held() may run in another thread

    def held(self) -> frozenset[str]:
        now = self.clock()
        return frozenset(name for name, until in self._until.items() if until > now)

    def names(self) -> list[str]:
        return sorted(self._until)

    def renewed(self, names: Iterable[str], sent_at: float, ttl: float) -> None:
        """These (and no others) held as of a statement sent at `sent_at` that gave the database TTL from then."""
        self._until = dict.fromkeys(names, sent_at + ttl - self.margin)

    def added(self, names: Iterable[str], sent_at: float, ttl: float) -> None:
        self._until = self._until | dict.fromkeys(names, sent_at + ttl - self.margin)

    def dropped(self, names: Iterable[str] | None = None) -> None:
        """Stop now: these (None: all)."""
        gone = set(self._until if names is None else names)
        self._until = {name: until for name, until in self._until.items() if name not in gone}


class StatementTimeout(Exception):
    """The database did not answer in time: the connection is frozen, or the server too slow to count on."""


class _Session:
    """A connection of its own on which every statement (and the connecting) gives up after `timeout` seconds.

    psycopg2's asynchronous mode, waited on with select(): a blocking connection would wait forever
    on a connection the network froze, and with it the worker's view of its deadlines.
    """

    def __init__(self, url: str, holder: str, timeout: float, **settings: Any) -> None:
        self.url, self.timeout = url.replace("postgres://", "postgresql://", 1), timeout
        self.settings: dict[str, Any] = {"application_name": worker_session_name(holder),
                                         "connect_timeout": max(1, int(timeout))} | settings
        self._connection: Any = None

    def run(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """The rows of the last statement in `sql`; any failure closes the connection (the next run opens one)."""
        import psycopg2
        deadline = time.monotonic() + self.timeout
        try:
            if self._connection is None:
                self._connection = psycopg2.connect(self.url, async_=1, **self.settings)
                self._wait(deadline)
            cursor = self._connection.cursor()
            cursor.execute(sql, params)
            self._wait(deadline)
            return cursor.fetchall() if cursor.description else []
        except BaseException:
            self.close()
            raise

    @property
    def server_version(self) -> int:
        """The server's version number (150004), once connected; 0 before."""
        return int(self._connection.server_version) if self._connection is not None else 0

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None

    def _wait(self, deadline: float) -> None:
        import psycopg2.extensions as ext
        while (state := self._connection.poll()) != ext.POLL_OK:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StatementTimeout(f"no answer from the database in {self.timeout:g} s")
            fd = self._connection.fileno()
            select.select([fd] if state == ext.POLL_READ else [], [fd] if state == ext.POLL_WRITE else [], [], left)


class _PostgresLeases:
    """What both PostgreSQL kinds share: the holder's name, its deadlines, its session, failures logged once."""

    def __init__(self, url: str, holder: str | None = None, ttl: float = TTL_SECONDS, margin: float = MARGIN_SECONDS,
                 timeout: float = QUERY_SECONDS, clock: Callable[[], float] = boot_clock, **settings: Any) -> None:
        self.holder, self.ttl, self.clock = holder or new_holder(), ttl, clock
        self._deadlines = _Deadlines(clock, margin)
        self._session = _Session(url, self.holder, timeout, **settings)
        self._failing = False

    def held(self) -> frozenset[str]:
        return self._deadlines.held()

    def _run(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]] | None:
        """The rows, or None when the database failed (logged once per outage)."""
        import psycopg2
        try:
            rows = self._session.run(sql, params)
        except (psycopg2.Error, StatementTimeout, OSError) as exc:
            if not self._failing:
                log.warning("leases: the database cannot be reached (%s)", " ".join(str(exc).split()))
            self._failing = True
            return None
        if self._failing:
            log.info("leases: the database answers again")
        self._failing = False
        return rows


# One statement takes a free lease, takes over an expired one, or renews one's own; nothing else.
_CLAIM = """
INSERT INTO lease (name, holder, expires_at)
SELECT wanted.name, %(holder)s, now() + make_interval(secs => %(ttl)s) FROM unnest(%(names)s::text[]) AS wanted(name)
WHERE NOT EXISTS (SELECT 1 FROM lease WHERE lease.name = wanted.name AND lease.expires_at >= now()
                  AND lease.holder <> %(holder)s)
LIMIT %(most)s
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
WHERE lease.expires_at < now() OR lease.holder = EXCLUDED.holder
RETURNING name"""

_ANNOUNCE = """
INSERT INTO worker (name, started_at, expires_at) VALUES (%(holder)s, now(), now() + make_interval(secs => %(ttl)s))
ON CONFLICT (name) DO UPDATE SET expires_at = EXCLUDED.expires_at;
DELETE FROM worker WHERE expires_at < now() - interval '1 day';
SELECT count(*), count(*) FILTER (WHERE name < %(holder)s) FROM worker WHERE expires_at > now()"""

# The sessions of workers whose row has expired (frozen, or cut off from the database: their own deadlines have
# passed) are ended, each of its connections named after it (`application_name`, set by `worker_session_name`):
# the locks and transactions they hold (an instance lock, a row being sent) would otherwise last until the server's
# TCP keepalive sees them gone, hours later. A worker that comes back reconnects and takes part again. Only this
# database's: pg_stat_activity lists every database of the server, another deployment's workers too.
_EXPIRED = "SELECT name FROM worker WHERE expires_at < now() AND name <> %(holder)s"
# A role may end only its own roles' sessions (pg_terminate_backend raises for the others, failing the statement).
_FENCE = """
SELECT count(*) FILTER (WHERE pg_has_role(session.usesysid, 'MEMBER') AND {terminate}),
       count(*) FILTER (WHERE NOT pg_has_role(session.usesysid, 'MEMBER'))
FROM pg_stat_activity AS session
WHERE session.datname = current_database() AND session.application_name = ANY(%(sessions)s)"""


def worker_session_name(holder: str) -> str:
    """The `application_name` of each database session of the worker `holder` (PGAPPNAME): how the others end them."""
    name = f"inboxd {holder}"
    if len(name.encode()) <= 63:  # PostgreSQL keeps 63 bytes of it
        return name
    # Cut, a long host name would leave two workers of that host one name (and the fence of one end the other's):
    # a digest of the whole holder keeps each its own.
    return f"{name.encode()[:50].decode(errors='ignore')}~{hashlib.sha256(holder.encode()).hexdigest()[:12]}"


class RowLeases(_PostgresLeases):
    """Leases as rows of `lease` with an expiry by the database's clock; renewed by the same statement that takes."""

    def announce(self) -> tuple[int, int]:
        rows = self._run(_ANNOUNCE, {"holder": self.holder, "ttl": self.ttl})
        return (0, 0) if rows is None else (int(rows[0][0]), int(rows[0][1]))

    def take(self, names: Iterable[str], most: int) -> frozenset[str]:
        wanted = [name for name in names if name not in self.held()]
        if most <= 0 or not wanted:
            return frozenset()
        sent_at = self.clock()
        taken = self._claim(wanted, most) or frozenset()
        self._deadlines.added(taken, sent_at, self.ttl)
        if taken:
            self.fence()
        return taken

    def fence(self) -> int:
        """End the database sessions of the workers that are no longer alive; how many were ended."""
        # PostgreSQL 14 and later wait (up to 0.5 s) for each session to be gone: its locks free before we go on.
        terminate = "pg_terminate_backend(session.pid, 500)" if self._session.server_version >= 140000 \
            else "pg_terminate_backend(session.pid)"
        expired = self._run(_EXPIRED, {"holder": self.holder})
        if not expired:
            return 0
        rows = self._run(_FENCE.format(terminate=terminate),
                         {"sessions": [worker_session_name(name) for name, in expired]})
        ended, barred = (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)
        if ended:
            log.warning("leases: ended %d database session(s) of worker(s) no longer alive (frozen or cut off), "
                        "so that their locks and transactions do not hold up the mailboxes taken over", ended)
        if barred:
            log.warning("leases: %d database session(s) of worker(s) no longer alive run as another database role, "
                        "which this one may not end: their locks last until the server finds them gone (run every "
                        "worker as one role)", barred)
        return ended

    def renew(self) -> frozenset[str]:
        names = self._deadlines.names()
        sent_at = self.clock()
        kept = self._claim(names, len(names)) if names else None
        if kept is not None:  # the database answered: what it did not renew is another's now
            self._deadlines.renewed(kept, sent_at, self.ttl)
        return self.held()

    def release(self, names: Iterable[str]) -> None:
        names = list(names)
        self._deadlines.dropped(names)
        self._run("DELETE FROM lease WHERE holder = %(holder)s AND name = ANY(%(names)s)",
                  {"holder": self.holder, "names": names})  # failing, they expire by themselves

    def close(self) -> None:
        self.release(self._deadlines.names())
        self._run("DELETE FROM worker WHERE name = %(holder)s", {"holder": self.holder})
        self._session.close()

    def _claim(self, names: list[str], most: int) -> frozenset[str] | None:
        """The names the database gave this worker until now + TTL; None when it did not answer."""
        rows = self._run(_CLAIM, {"holder": self.holder, "ttl": self.ttl, "names": names, "most": most})
        return None if rows is None else frozenset(row[0] for row in rows)


# The two-integer advisory lock keys: a class of ours, then the name's hash (31 bits: pg_locks shows it as an oid).
LEASE_CLASS, WORKER_CLASS = 0x1B0D_0017, 0x1B0D_0018


def lock_key(name: str) -> int:
    """The advisory lock key of a lease name (two names sharing one would only be held together)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") >> 1


class AdvisoryLeases(_PostgresLeases):
    """Leases as session advisory locks on one connection of this worker's: they live as long as the session.

    The server ends the session (and frees its locks) when the connection closes, or when it has
    been idle for TTL: `idle_session_timeout`, set for this session only, is what makes it notice a
    connection that froze rather than closed (the server's TCP keepalives start after two hours by
    default, and see a dead peer, not a proxy that swallows). The worker counts its deadline from
    each statement it sent; any failure drops every lease at once, since the session may be gone.
    """

    def __init__(self, url: str, holder: str | None = None, ttl: float = TTL_SECONDS, margin: float = MARGIN_SECONDS,
                 timeout: float = QUERY_SECONDS, clock: Callable[[], float] = boot_clock) -> None:
        idle = f"-c idle_session_timeout={int(ttl * 1000)}"
        super().__init__(url, holder, ttl, margin, timeout, clock, options=idle)
        self._keys: dict[int, str] = {}

    def announce(self) -> tuple[int, int]:
        rows = self._run(
            "SELECT pg_try_advisory_lock(%(class)s, %(key)s) WHERE NOT EXISTS (SELECT 1 FROM pg_locks "
            "WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND classid = %(class)s AND objsubid = 2);"
            "SELECT count(*), count(*) FILTER (WHERE objid::bigint < %(key)s) FROM pg_locks WHERE locktype = "
            "'advisory' AND classid = %(class)s AND objsubid = 2 AND granted",
            {"class": WORKER_CLASS, "key": lock_key(self.holder)})
        if rows is None:
            self._lost()
            return 0, 0
        return int(rows[0][0]), int(rows[0][1])

    def take(self, names: Iterable[str], most: int) -> frozenset[str]:
        wanted = [name for name in names if name not in self.held()]
        if most <= 0 or not wanted:
            return frozenset()
        keys = {lock_key(name): name for name in wanted}
        self._keys |= keys
        sent_at = self.clock()
        # LIMIT stops the scan at `most` locks taken: the function runs only on the rows pulled
        rows = self._run("SELECT key FROM unnest(%(keys)s::int[]) AS wanted(key) "
                         "WHERE pg_try_advisory_lock(%(class)s, key) LIMIT %(most)s",
                         {"keys": list(keys), "class": LEASE_CLASS, "most": most})
        if rows is None:
            self._lost()
            return frozenset()
        taken = frozenset(keys[key] for (key,) in rows)
        self._deadlines.added(taken, sent_at, self.ttl)
        return taken

    def renew(self) -> frozenset[str]:
        sent_at = self.clock()
        rows = self._run("SELECT objid::bigint FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory' "
                         "AND classid = %(class)s AND objsubid = 2 AND granted", {"class": LEASE_CLASS})
        if rows is None:
            self._lost()
            return frozenset()
        self._deadlines.renewed((self._keys[key] for (key,) in rows if key in self._keys), sent_at, self.ttl)
        return self.held()

    def release(self, names: Iterable[str]) -> None:
        names = list(names)
        self._deadlines.dropped(names)
        if self._run("SELECT pg_advisory_unlock(%(class)s, key) FROM unnest(%(keys)s::int[]) AS gone(key)",
                     {"class": LEASE_CLASS, "keys": [lock_key(name) for name in names]}) is None:
            self._lost()

    def close(self) -> None:
        self._deadlines.dropped()
        self._session.close()  # the session's end frees every lock

    def _lost(self) -> None:
        """The session may be gone, and its locks free for others already: stop working on every lease now."""
        self._deadlines.dropped()


@dataclass
class Board:
    """The database of `FakeLeases`: leases and workers with expiries on a clock the test moves."""

    now: float = 0.0
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> (holder, expires)
    workers: dict[str, float] = field(default_factory=dict)  # holder -> expires
    down: set[str] = field(default_factory=set)  # holders that cannot reach it


class FakeLeases:
    """`RowLeases` in memory on a shared `Board`, for tests of the sharing without a database."""

    def __init__(self, board: Board, holder: str, ttl: float = TTL_SECONDS, margin: float = MARGIN_SECONDS) -> None:
        self.board, self.holder, self.ttl = board, holder, ttl
        self._deadlines = _Deadlines(lambda: board.now, margin)

    def announce(self) -> tuple[int, int]:
        if self.holder in self.board.down:
            return 0, 0
        self.board.workers[self.holder] = self.board.now + self.ttl
        live = sorted(holder for holder, expires in self.board.workers.items() if expires > self.board.now)
        return len(live), live.index(self.holder)

    def take(self, names: Iterable[str], most: int) -> frozenset[str]:
        free = [name for name in names if name not in self.held() and self._free(name)][:max(most, 0)]
        taken = self._claim(free)
        self._deadlines.added(taken, self.board.now, self.ttl)
        return taken

    def renew(self) -> frozenset[str]:
        if self.holder not in self.board.down:
            self._deadlines.renewed(self._claim(self._deadlines.names()), self.board.now, self.ttl)
        return self.held()

    def held(self) -> frozenset[str]:
        return self._deadlines.held()

    def release(self, names: Iterable[str]) -> None:
        names = list(names)
        self._deadlines.dropped(names)
        if self.holder not in self.board.down:
            for name in names:
                if self.board.leases.get(name, ("",))[0] == self.holder:
                    del self.board.leases[name]

    def close(self) -> None:
        self.release(self._deadlines.names())
        self.board.workers.pop(self.holder, None)

    def _free(self, name: str) -> bool:
        holder, expires = self.board.leases.get(name, (self.holder, 0.0))
        return holder == self.holder or expires < self.board.now

    def _claim(self, names: Iterable[str]) -> frozenset[str]:
        if self.holder in self.board.down:
            return frozenset()
        claimed = frozenset(name for name in names if self._free(name))
        for name in claimed:
            self.board.leases[name] = (self.holder, self.board.now + self.ttl)
        return claimed


def claim_run(job: str, moment: datetime, worker: str = "") -> bool:
    """Claim `job` at `moment` in the caller's transaction: True for the one worker that may run it.

    A second claim of the same (job, moment) waits for the first transaction: if it commits, the
    second gets False; if it rolls back (the job failed), the second may run the job instead.
    """
    inserted = JobRun.insert(job=job, moment=moment, worker=worker, claimed_at=datetime.now(UTC)) \
        .on_conflict_ignore().as_rowcount().execute()
    return bool(inserted)
