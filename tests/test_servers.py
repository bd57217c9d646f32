"""Tests for inboxd.servers: the real SMTP capture and IMAP servers the other tests rely on."""

from __future__ import annotations

import os
import select
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inboxd import servers
from inboxd.servers import DovecotServer, PymapServer, SmtpCapture, append_messages, count_files

IN_CI = os.environ.get("CI", "").lower() == "true"


def mail(n: int) -> bytes:
    """A small raw mail numbered ``n``."""
    head = f"From: a@example.org\r\nTo: b@example.org\r\nSubject: mail {n}\r\nMessage-ID: <{n}@t>\r\n"
    return f"{head}\r\nbody {n}\r\n".encode()


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    if not DovecotServer.available():
        if IN_CI:
            pytest.fail("CI=true but Dovecot is not available")
        pytest.skip("Dovecot not available (needs root and dovecot-imapd)")
    with DovecotServer() as server:
        yield server


@pytest.fixture(scope="module")
def pymap() -> Iterator[PymapServer]:
    with PymapServer() as server:
        yield server


@pytest.fixture(params=["dovecot", "pymap"])
def imap(request: pytest.FixtureRequest) -> servers.ImapServer:
    server: servers.ImapServer = request.getfixturevalue(request.param)
    server.reset()
    return server


def test_smtp_capture_receives_8bit_mail_and_files_it(tmp_path: Path) -> None:
    data = "From: a@example.org\r\nSubject: Grüße\r\n\r\nbödy\r\n.leading dot\r\n".encode()
    with SmtpCapture(tmp_path) as capture:
        with smtplib.SMTP(capture.host, capture.port) as client:
            client.sendmail("a@example.org", ["b@example.org", "c@example.org"], data)
        assert capture.wait_for(1, timeout=5)
    [got] = capture.messages
    assert got == servers.CapturedMail("a@example.org", ("b@example.org", "c@example.org"), data)
    assert count_files(tmp_path) == 1
    assert [p.read_bytes() for p in tmp_path.iterdir()] == [data]


def test_smtp_capture_wait_for_times_out() -> None:
    with SmtpCapture() as capture:
        assert not capture.wait_for(1, timeout=0.05)


def test_smtp_capture_in_separate_process(tmp_path: Path) -> None:
    with SmtpCapture.spawn(tmp_path) as capture:
        child = capture._proc
        assert capture.directory == tmp_path and not capture.wait_for(1, timeout=0.01)
        with smtplib.SMTP(capture.host, capture.port) as client:
            for n in range(3):
                client.sendmail("a@example.org", ["b@example.org"], mail(n))
        assert capture.wait_for(3, timeout=5)
    assert child is not None and child.returncode is not None
    assert count_files(tmp_path) == 3
    assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == sorted(mail(n) for n in range(3))


def test_append_and_uid_search(imap: servers.ImapServer) -> None:
    assert append_messages(imap, (mail(n) for n in range(3))) == 3
    with imap.connect() as client:
        client.select_folder("INBOX")
        uids = client.search("ALL")
        assert len(uids) == 3
        assert len(client.search(["SUBJECT", "mail 1"])) == 1
        bodies = client.fetch(uids, ["BODY.PEEK[]"])
        assert sorted(b[b"BODY[]"] for b in bodies.values()) == sorted(mail(n) for n in range(3))


def test_idle_sees_append_from_other_connection(imap: servers.ImapServer) -> None:
    with imap.connect() as watcher, imap.connect() as writer:
        watcher.select_folder("INBOX")
        watcher.idle()
        seen: list[tuple[int | bytes, ...]] = []
        # pymap answers IDLE before it listens for changes: a mail appended in that instant goes
        # unreported (about one run in fifty). A second mail a moment later must then be seen.
        for number, wait in ((1, 2.5), (2, 5)):
            writer.append("INBOX", mail(number))
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not any(r[1:2] == (b"EXISTS",) for r in seen):
                # pymap writes a line in pieces, and imapclient's idle_check reads without waiting: a
                # half-written "* 1 FETCH (" aborts it. Once something came, give the line time to end.
                if select.select([watcher.socket()], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    time.sleep(0.2)
                    seen += watcher.idle_check(timeout=1)
            if any(r[1:2] == (b"EXISTS",) for r in seen):
                break
        watcher.idle_done()
        assert any(r[1:2] == (b"EXISTS",) for r in seen), seen


def test_move_to_created_folder(imap: servers.ImapServer) -> None:
    append_messages(imap, [mail(1), mail(2)])
    with imap.connect() as client:
        assert client.has_capability("MOVE") and client.has_capability("UIDPLUS")
        client.create_folder("Done/2024")
        client.select_folder("INBOX")
        uid = client.search(["SUBJECT", "mail 2"])
        client.move(uid, "Done/2024")
        assert len(client.search("ALL")) == 1
        assert client.folder_status("Done/2024", ["MESSAGES"])[b"MESSAGES"] == 1


def test_reset_empties(imap: servers.ImapServer) -> None:
    append_messages(imap, [mail(1)])
    append_messages(imap, [mail(2)], folder="INBOX")
    with imap.connect() as client:
        client.create_folder("Old")
        client.create_folder("Old/Older")
    imap.reset()
    with imap.connect() as client:
        assert [name for _flags, _delim, name in client.list_folders()] == ["INBOX"]
        assert client.select_folder("INBOX")[b"EXISTS"] == 0


def test_server_choice_never_falls_back_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DovecotServer, "available", classmethod(lambda cls: False))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(RuntimeError, match="CI requires Dovecot"):
        servers.imap_server_for_tests()
    monkeypatch.delenv("CI")
    assert isinstance(servers.imap_server_for_tests(), PymapServer)
