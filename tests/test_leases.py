"""Leases (inboxd/leases.py): one worker per mailbox, shared fairly, self-fenced; a job once per moment.

The PostgreSQL tests run each case on both kinds, rows and advisory locks, with a TTL of one
second; they wait for conditions with deadlines and assert orders of events, never durations.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tcpproxy import FreezingProxy

from inboxd.leases import AdvisoryLeases, Board, FakeLeases, RowLeases, claim_run, keep_share, worker_session_name
from inboxd.models import JobRun, db, open_database

MAILBOXES = [f"mailbox:team{n:02}" for n in range(20)]
TTL, MARGIN, TIMEOUT = 1.0, 0.3, 0.5
KINDS = {"rows": RowLeases, "advisory": AdvisoryLeases}
_databases = itertools.count()


def eventually(condition: Callable[[], Any], seconds: float = 20.0) -> Any:
    """The first truthy value of `condition`, asked every 20 ms; failing after `seconds` (a bound, not a figure)."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not within {seconds} s: {condition}"
        time.sleep(0.02)
    return value


@pytest.fixture
def url(postgres) -> str:
    """A fresh database at the latest schema."""
    url = postgres.create_database(f"inboxd_leases_{next(_databases)}")
    open_database(url).close()
    return url


@pytest.fixture(params=list(KINDS))
def worker(request, url):
    """Make workers of one kind on the database; all closed at the end."""
    made: list[Any] = []

    def make(at: str = url, name: str | None = None):
        made.append(KINDS[request.param](at, holder=name, ttl=TTL, margin=MARGIN, timeout=TIMEOUT))
        return made[-1]
    yield make
    for leases in made:
        leases.close()


def test_a_lease_is_held_by_one_worker_at_a_time(worker):
    a, b = worker(name="a"), worker(name="b")
    assert a.take(["mailbox:help", "mailbox:hr"], most=5) == {"mailbox:help", "mailbox:hr"}
    assert b.take(["mailbox:help", "mailbox:hr", "mailbox:payroll"], most=5) == {"mailbox:payroll"}
    a.release(["mailbox:help"])
    assert a.held() == {"mailbox:hr"}
    assert b.take(["mailbox:help", "mailbox:hr"], most=5) == {"mailbox:help"}
    assert a.take(["mailbox:help"], most=1) == set() and a.renew() == {"mailbox:hr"}


def test_a_lease_not_renewed_expires_and_another_takes_it(worker):
    a, b = worker(name="a"), worker(name="b")
    assert a.take(["mailbox:help"], most=1)
    # a says nothing more (rows: its row expires; advisory: the server ends its idle session)
    assert eventually(lambda: b.take(["mailbox:help"], most=1)) == {"mailbox:help"}
    assert a.held() == set() and a.renew() == set()  # its deadline passed first; renewing, it learns the lease is b's


def test_taking_over_ends_the_sessions_of_a_worker_no_longer_alive(url):
    """A frozen worker's sessions (named after it) lose their locks when its lease is taken over; a live one's stay."""
    import psycopg2
    a, b, c = (RowLeases(url, holder=name, ttl=TTL, margin=MARGIN, timeout=TIMEOUT) for name in "abc")
    try:
        a.announce(), c.announce()
        assert a.take(["mailbox:help"], most=1) == {"mailbox:help"}
        sessions = {name: psycopg2.connect(url, application_name=worker_session_name(name)) for name in "ac"}
        for name, session in sessions.items():  # each holds a session lock, as a team's instance lock does
            session.autocommit = True
            session.cursor().execute("SELECT pg_advisory_lock(%s)", (ord(name),))
        # a freezes (says nothing more); c stays alive; b takes a's lease once it has expired
        assert eventually(lambda: c.announce() and b.take(["mailbox:help"], most=1)) == {"mailbox:help"}
        with pytest.raises(psycopg2.OperationalError):
            sessions["a"].cursor().execute("SELECT 1")  # a's session was ended, its lock with it
        sessions["c"].cursor().execute("SELECT 1")  # c's is untouched
        free = psycopg2.connect(url)
        free.autocommit = True
        cursor = free.cursor()
        cursor.execute("SELECT pg_try_advisory_lock(%s), pg_try_advisory_lock(%s)", (ord("a"), ord("c")))
        assert cursor.fetchone() == (True, False)
        free.close()
        sessions["c"].close()
    finally:
        for leases in (a, b, c):
            leases.close()


def test_a_worker_named_like_the_dead_one_in_another_database_or_on_a_long_host_name_keeps_its_sessions(postgres, url):
    """The fence ends the dead worker's sessions only: not those of this database's live workers whose names share
    a long host name's first 63 characters, nor a session of that name in another deployment's database."""
    import psycopg2
    host = "inboxd-worker-1.europe-west1-b.c.example-project-123456.internal"  # a cloud VM's host name
    dead, live = f"{host}:4100:a1b2c3", f"{host}:4200:d4e5f6"  # a worker killed, restarted by systemd on its host
    assert worker_session_name(dead) != worker_session_name(live)
    assert all(len(worker_session_name(name).encode()) <= 63 for name in (dead, live))
    other = postgres.create_database(f"inboxd_leases_{next(_databases)}")
    a, b = (RowLeases(url, holder=name, ttl=TTL, margin=MARGIN, timeout=TIMEOUT) for name in (dead, live))
    c = RowLeases(url, holder="c", ttl=TTL, margin=MARGIN, timeout=TIMEOUT)
    sessions = {"dead": psycopg2.connect(url, application_name=worker_session_name(dead)),
                "live": psycopg2.connect(url, application_name=worker_session_name(live)),
                "elsewhere": psycopg2.connect(other, application_name=worker_session_name(dead))}
    try:
        a.announce()
        assert a.take(["mailbox:help"], most=1) == {"mailbox:help"}
        # a dies; b lives on; c takes a's lease once it has expired
        assert eventually(lambda: b.announce() and c.take(["mailbox:help"], most=1)) == {"mailbox:help"}
        with pytest.raises(psycopg2.OperationalError):
            sessions["dead"].cursor().execute("SELECT 1")
        for name in ("live", "elsewhere"):
            sessions[name].cursor().execute("SELECT 1")  # untouched
    finally:
        for session in sessions.values():
            session.close()
        for leases in (a, b, c):
            leases.close()


def test_a_dead_workers_session_under_another_role_is_told_not_taken_for_a_lost_database(postgres, url, caplog):
    """pg_terminate_backend may end only the sessions of one's own role: the others are said, and the leases go on."""
    import psycopg2
    admin = psycopg2.connect(url)
    admin.autocommit = True
    for role in ("worker_a", "worker_b"):
        admin.cursor().execute(f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; "
                               f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; "
                               f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    as_role = {role: url.replace("inboxd@", f"{role}@") for role in ("worker_a", "worker_b")}
    a = RowLeases(as_role["worker_a"], holder="a", ttl=TTL, margin=MARGIN, timeout=TIMEOUT)
    b = RowLeases(as_role["worker_b"], holder="b", ttl=TTL, margin=MARGIN, timeout=TIMEOUT)
    session = psycopg2.connect(as_role["worker_a"], application_name=worker_session_name("a"))
    try:
        a.announce()
        assert a.take(["mailbox:help"], most=1) == {"mailbox:help"}
        assert eventually(lambda: b.take(["mailbox:help"], most=1)) == {"mailbox:help"}
        assert "cannot be reached" not in caplog.text
        assert any(r.levelno == logging.WARNING and "2 database session(s) of worker(s) no longer alive run as "
                   "another database role" in r.message for r in caplog.records)  # a's own, and its team's
        session.cursor().execute("SELECT 1")  # left as it was
    finally:
        session.close()
        for leases in (a, b):
            leases.close()
        admin.close()


def test_renewing_keeps_a_lease_past_its_ttl(worker):
    a, b = worker(name="a"), worker(name="b")
    a.take(["mailbox:help"], most=1)
    until = time.monotonic() + 4 * TTL
    while time.monotonic() < until:
        assert a.renew() == {"mailbox:help"}
        assert b.take(["mailbox:help"], most=1) == set()
        time.sleep(TTL / 5)


def test_a_holder_cut_off_from_the_database_knows_it_lost_the_lease_before_another_can_take_it(postgres, url, worker):
    proxy = FreezingProxy(postgres.port)
    try:
        a, b = worker(at=url.replace(f":{postgres.port}/", f":{proxy.port}/"), name="a"), worker(name="b")
        assert a.take(["mailbox:help"], most=1) and a.renew() == {"mailbox:help"}
        proxy.freeze()  # a's connection swallows everything from now on, and stays open
        stop = threading.Event()

        def renew_every_tenth_of_a_second() -> None:
            while not stop.wait(0.1):
                a.renew()
        renewing = threading.Thread(target=renew_every_tenth_of_a_second)
        renewing.start()  # as a worker does: its renewals fail (statement timeouts), its deadline comes
        seen = []  # (a still believes it holds it, b got it), in order

        def b_took_it() -> bool:
            believes = "mailbox:help" in a.held()
            seen.append((believes, bool(b.take(["mailbox:help"], most=1))))
            return seen[-1][1]
        eventually(b_took_it)
        stop.set()
        renewing.join()
        assert (False, True) == seen[-1]  # when b got the lease, a had stopped
        assert (False, False) in seen  # a stopped while nobody else could have it yet
        assert all(not (believes and took) for believes, took in seen)
    finally:
        proxy.close()


def test_three_workers_share_twenty_mailboxes_and_a_fourth_gets_some(worker):
    workers = [worker(name=f"w{n}") for n in range(3)]

    def shares() -> list[int] | None:
        held = [keep_share(w, MAILBOXES) for w in workers]
        everything = set().union(*held)
        assert sum(map(len, held)) == len(everything)  # never one mailbox twice
        return sorted(map(len, held)) if everything == set(MAILBOXES) else None
    assert eventually(lambda: shares() == [6, 7, 7])
    workers.append(worker(name="w3"))
    assert eventually(lambda: shares() == [5, 5, 5, 5])  # the newcomer got its share from the others
    workers.pop(0).close()
    assert eventually(lambda: shares() == [6, 7, 7])  # the leaver's leases were taken by the rest


def test_four_mailboxes_over_three_workers_leave_none_idle():
    board = Board()
    workers = [FakeLeases(board, f"w{n}") for n in range(3)]
    for _ in range(3):
        held = [keep_share(w, MAILBOXES[:4]) for w in workers]
    assert sorted(map(len, held)) == [1, 1, 2] and set().union(*held) == set(MAILBOXES[:4])


def test_two_sweepers_at_the_same_moment_run_the_job_once(url):
    database = open_database(url)
    moment = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    claimed, outcomes = threading.Event(), {}
    finish = threading.Event()

    def sweeper(name: str, hold: bool) -> None:
        with db.atomic():
            outcomes[name] = claim_run("sweep", moment, worker=name)
            if hold:
                claimed.set()
                finish.wait(30)
        db.close()

    first = threading.Thread(target=sweeper, args=("a", True))
    first.start()
    claimed.wait(30)
    second = threading.Thread(target=sweeper, args=("b", False))
    second.start()
    # b's claim waits on a's uncommitted row, in a transaction of its own
    eventually(lambda: database.execute_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()[0])
    finish.set()
    first.join(30)
    second.join(30)
    assert outcomes == {"a": True, "b": False}
    assert [(r.job, r.worker) for r in JobRun.select()] == [("sweep", "a")]
    with db.atomic() as transaction:  # a run that fails rolls its claim back: the job is still to run
        assert claim_run("sweep", moment + timedelta(minutes=1), worker="a")
        transaction.rollback()
    assert claim_run("sweep", moment + timedelta(minutes=1), worker="b")
    database.close()


def test_the_job_claim_on_sqlite(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'inboxd.db'}")
    moment = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert claim_run("sweep", moment) and not claim_run("sweep", moment)
    assert claim_run("digest", moment) and claim_run("sweep", moment + timedelta(minutes=1))
    database.close()


def test_the_sharing_on_fakes_a_cut_off_worker_stops_before_the_others_take_over():
    board = Board()
    workers = [FakeLeases(board, f"w{n}") for n in range(3)]
    for _ in range(2):
        held = [keep_share(w, MAILBOXES) for w in workers]
    assert sorted(map(len, held)) == [6, 7, 7]
    lost = workers[0].held()
    board.down.add("w0")  # w0 cannot reach the database any more
    steps = []
    while not lost <= set().union(*(w.held() for w in workers[1:])):
        board.now += 0.5
        held = [keep_share(w, MAILBOXES) for w in workers]
        steps.append((bool(held[0]), bool(lost & (held[1] | held[2]))))
    assert (False, True) == steps[-1] and (False, False) in steps  # w0 stopped first
    assert board.now == 6.5  # its leases expired at 6 (its last renewal at 0, TTL 6): taken at the next round
    assert not any(believes and took for believes, took in steps)
    assert sorted(len(h) for h in held[1:]) == [10, 10]
