"""Issue 13 items 3 and 5: fetches bounded by a byte budget, a damaged mail set aside, backoff across an outage.

The pure grouping and the daemon's fallbacks run on FakeSource; the same cases on a real Dovecot
(a mail file it may not read, a huge header block) are in test_fetch_dovecot.py.
"""

import logging

from inboxd.config import load_config
from inboxd.daemon import FETCH_ATTEMPTS, Daemon
from inboxd.errors import SourceError
from inboxd.models import Item, MailboxState, Message, Outbox
from inboxd.outbox import FakeTransport
from inboxd.source import HEADER_CAP, TEXT_START, FakeSource, by_budget

from helpers import make_mail, write_config

MB = 1024 * 1024


def test_groups_stay_within_the_budget_and_a_larger_mail_goes_alone():
    sizes = {1: 10 * MB, 2: 10 * MB, 3: 10 * MB, 4: 40 * MB, 5: 1 * MB}
    assert list(by_budget([1, 2, 3, 4, 5], sizes, max_bytes=50 * MB, budget=25 * MB)) == [[1, 2], [3], [4], [5]]


def test_a_mail_over_the_limit_counts_as_the_part_that_is_read_and_a_deleted_one_not_at_all():
    sizes = {1: 100 * MB, 2: 100 * MB, 4: 1000}
    start = HEADER_CAP + TEXT_START
    assert list(by_budget([1, 2, 3, 4], sizes, max_bytes=25 * MB, budget=2 * start)) == [[1, 2], [4]]


def daemon_on(tmp_path, source: FakeSource, extra: str = "") -> Daemon:
    return Daemon(load_config(write_config(tmp_path, extra=extra)), source=source, transport=FakeTransport())


def test_the_daemon_fetches_by_budget_and_processes_every_mail(tmp_path):
    source = FakeSource()
    source.add(make_mail(sender=f"user{n}@example.org", body="x" * 3000) for n in range(5))
    daemon = daemon_on(tmp_path, source)
    daemon.fetch_budget = 7000  # two of these mails
    daemon.ingest(source.open())
    assert source.fetches == [[1, 2], [3, 4], [5]]
    assert Item.select().count() == 5 and source.done == [1, 2, 3, 4, 5]


def test_a_mail_that_cannot_be_fetched_is_set_aside_the_lead_told_once_and_the_rest_go_on(tmp_path):
    source = FakeSource(broken={2})
    source.add(make_mail(sender=f"user{n}@example.org") for n in range(4))
    daemon = daemon_on(tmp_path, source)
    daemon.ingest(source.open())
    # The group fails, then each mail alone; the broken one FETCH_ATTEMPTS times.
    assert source.fetches == [[1, 2, 3, 4], [1], *[[2]] * FETCH_ATTEMPTS, [3], [4]]
    assert Item.select().count() == 3 and source.done == [1, 3, 4] and source.aside == [2]
    (parked,) = Message.select().where(Message.outcome == "parked")
    assert parked.uid == 2 and "UID 2: the server failed to hand it over 3 times" in parked.reason
    assert "Internal error" in parked.reason
    (told,) = Outbox.select().where(Outbox.kind == "unreadable")
    assert told.recipients == ["lead@example.org"] and b"cannot be read" in bytes(told.raw)
    source.mails[5] = make_mail()  # the next round starts past the set-aside mail
    daemon.ingest(source.open())
    assert source.fetches[-1] == [5] and Outbox.select().where(Outbox.kind == "unreadable").count() == 1


def test_a_mail_recorded_unreadable_before_a_crash_is_not_told_again(tmp_path):
    source = FakeSource(broken={1})
    source.add([make_mail()])
    daemon = daemon_on(tmp_path, source)
    daemon.ingest(source.open())
    MailboxState.update(last_uid=0).execute()  # as if it crashed after the commit, before last_uid moved on
    daemon.ingest(source.open())
    assert source.aside == [1, 1] and Outbox.select().where(Outbox.kind == "unreadable").count() == 1


def test_without_the_template_the_mail_is_still_set_aside_and_the_error_logged(tmp_path, caplog):
    import shutil

    from helpers import REPO
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    (templates / "unreadable.txt").unlink()  # an admin's own templates folder from before issue 13
    source = FakeSource(broken={1})
    source.add([make_mail(), make_mail()])
    daemon = Daemon(load_config(write_config(tmp_path, templates=templates)), source=source,
                    transport=FakeTransport())
    with caplog.at_level(logging.ERROR, logger="inboxd"):
        daemon.ingest(source.open())
    assert source.aside == [1] and source.done == [2]
    assert Outbox.select().where(Outbox.kind == "unreadable").count() == 0
    assert Message.select().where(Message.outcome == "parked").count() == 1
    assert "the lead could not be told of UID 1" in caplog.text and "unreadable.txt" in caplog.text


class FailingAfterConnect(FakeSource):
    """Connects fine, then fails at once, a few times: the outage is not over just because it connected."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures, self.opens, self.daemon = failures, 0, None

    def open(self) -> int:
        self.opens += 1
        return super().open()

    def new_uids(self, after: int) -> list[int]:
        if self.opens <= self.failures:
            raise SourceError("IMAP: searching for new mail failed: abort: socket error: EOF")
        return super().new_uids(after)

    def wait(self, seconds, interrupt):
        self.daemon.stop()


def test_backoff_grows_across_reconnects_until_a_round_reads_the_mail(tmp_path, caplog, monkeypatch):
    source = FailingAfterConnect(failures=4)
    source.add([make_mail()])
    daemon = daemon_on(tmp_path, source)
    source.daemon = daemon
    waits = []
    monkeypatch.setattr(daemon._wakeup, "wait", lambda seconds=None: waits.append(seconds))
    with caplog.at_level(logging.DEBUG, logger="inboxd"):
        daemon.run()
    assert waits == [1.0, 2.0, 4.0, 8.0]  # not 1 s after every successful connect
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "socket error" in errors[0].getMessage()  # one ERROR per outage
    assert Item.select().count() == 1


class DroppedWhileIdling(FakeSource):
    """Reads fine after each connect, then loses the connection while waiting: separate outages."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds, self.daemon = rounds, None

    def wait(self, seconds, interrupt):
        self.rounds -= 1
        if self.rounds == 0:
            self.daemon.stop()
            return
        raise SourceError("IMAP: waiting for new mail (IDLE) failed: abort: socket error: EOF")


def test_a_round_that_read_the_mail_ends_the_outage_and_its_backoff(tmp_path, caplog, monkeypatch):
    source = DroppedWhileIdling(rounds=4)
    daemon = daemon_on(tmp_path, source)
    source.daemon = daemon
    waits = []
    monkeypatch.setattr(daemon._wakeup, "wait", lambda seconds=None: waits.append(seconds))
    with caplog.at_level(logging.INFO, logger="inboxd"):
        daemon.run()
    assert waits == [1.0, 1.0, 1.0]
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 3  # three outages, one line each


def test_a_store_failing_under_many_mails_tells_the_lead_once_a_day_and_parks_each(tmp_path, caplog):
    source = FakeSource(broken={1, 2, 3})
    source.add(make_mail(sender=f"user{n}@example.org") for n in range(4))
    daemon = daemon_on(tmp_path, source)
    with caplog.at_level(logging.INFO, logger="inboxd"):
        daemon.ingest(source.open())
    assert Message.select().where(Message.outcome == "parked").count() == 3 and source.aside == [1, 2, 3]
    assert Outbox.select().where(Outbox.kind == "unreadable").count() == 1  # not one mail per mail
    assert "the lead was told of an unreadable mail today already" in caplog.text
