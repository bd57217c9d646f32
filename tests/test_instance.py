"""The instance lock: one inboxd per mailbox and database."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from inboxd.instance import AlreadyRunning, InstanceLock


def test_a_database_in_memory_needs_no_lock_and_leaves_no_file_behind(tmp_path, monkeypatch, config):
    """A dry run's scratch database: nobody else can reach it (it left ":memory:.….lock" files in the working folder)."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    memory = dataclasses.replace(config, database_url="sqlite:///:memory:")
    assert InstanceLock(memory).acquire() and InstanceLock(memory).acquire()
    assert list(folder.iterdir()) == []


def test_a_sqlite_file_is_locked_for_one_daemon_and_apart_for_its_delivery(config):
    daemon, delivery = InstanceLock(config), InstanceLock(config, role="delivery")
    assert daemon.acquire() and delivery.acquire()  # two locks: the delivery process does not wait for its daemon
    try:
        with pytest.raises(AlreadyRunning, match="already working on"):
            InstanceLock(config).acquire()
    finally:
        daemon.release()
        delivery.release()


def test_a_workers_team_locks_share_one_postgresql_session_and_exclude_another_worker(config, postgres):
    from test_workers import teams_config

    from inboxd.config import load_teams
    from inboxd.instance import LockSession
    from inboxd.models import open_database
    url = postgres.create_database("inboxd_lock_session")
    open_database(url).close()
    it, hr = load_teams(teams_config(config.path.parent / "d", count=2, url=url))
    mine, theirs = LockSession(url), LockSession(url)
    try:
        ours = [InstanceLock(team, session=mine) for team in (it, hr)]
        threads = [threading.Thread(target=lock.acquire) for lock in ours]  # as each team's thread takes its own
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        looking = open_database(url, migrate=False)
        sessions = looking.execute_sql("SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory'")
        assert sessions.fetchone()[0] == 1  # both teams' locks on one session
        looking.close()
        with pytest.raises(AlreadyRunning):
            InstanceLock(it, session=theirs).acquire()
        with pytest.raises(AlreadyRunning):
            InstanceLock(hr).acquire()  # a lone inboxd (`once --team`) is kept out as before
        ours[0].release()  # one team let go; the other still held
        assert InstanceLock(it, session=theirs).acquire()
        with pytest.raises(AlreadyRunning):
            InstanceLock(hr, session=theirs).acquire()
    finally:
        mine.close(), theirs.close()


def test_the_lock_session_lost_with_a_database_restart_is_opened_again_for_the_next_team(config, postgres):
    """Its session ended (a restart of the database, a fence) while no team asked: the next team's lock is taken on
    a new one, rather than failing, which would stop the worker."""
    import psycopg2

    from inboxd.instance import LockSession
    url = postgres.create_database("inboxd_lock_session_lost")
    session = LockSession(url)
    try:
        assert session.try_lock(1)
        pid = session._connection.get_backend_pid()
        killer = psycopg2.connect(url)
        killer.autocommit = True
        killer.cursor().execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))  # waits until it has ended
        killer.close()
        assert session.try_lock(2) and session._connection.get_backend_pid() != pid
    finally:
        session.close()
