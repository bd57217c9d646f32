"""The instance lock: one inboxd per mailbox and database."""

from __future__ import annotations

import dataclasses

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
