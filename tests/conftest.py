"""Fixtures: a config in a temp folder, a daemon on fakes, and real servers for end-to-end tests.

Tiers (markers registered in pyproject.toml, given here rather than test by test):
  server  the test starts or talks to a real IMAP, SMTP or PostgreSQL server (in this process or a
          child: the demo, the benches, `inboxd run`): every test using a server fixture, and every
          test in a module that makes its servers itself;
  slow    the test is one of a module of scenarios taking seconds each (the benches, the demo,
          end to end, IMAP faults, a month simulated).
`python3 -m pytest -m "not server and not slow"` is the fast tier. A test not marked `server`
may not open a network socket: it fails saying so, in either tier, so a test that quietly
starts a server cannot slip into the fast one.
"""

from __future__ import annotations

import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import write_config  # noqa: E402

from inboxd.clock import FixedClock  # noqa: E402
from inboxd.config import Config, load_config  # noqa: E402
from inboxd.daemon import Daemon  # noqa: E402
from inboxd.outbox import FakeTransport  # noqa: E402
from inboxd.source import FakeSource  # noqa: E402

# Monday 23 November 2026, 10:00 in Berlin
MONDAY_10 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)

# Fixtures that start (or stand for) a real server: a test using one is marked `server`.
SERVER_FIXTURES = {"imap_server", "mailbox", "smtp_capture", "certificate", "dovecot", "dovecot_tls", "pymap",
                   "imap", "tls_server", "postgres"}
# Fixtures that take seconds to build: a test using one is marked `slow`.
SLOW_FIXTURES = {"month"}
# Modules whose tests make servers or child processes themselves, not through a fixture.
MODULE_MARKS = {
    "test_bench": ("server", "slow"),  # runs bench/*.py: real servers, thousands of mails
    "test_demo": ("server", "slow"),  # runs `inboxd demo`
    "test_package": ("server", "slow"),  # builds a wheel, installs it in a venv, runs `inboxd demo` from there
    "test_e2e": ("server", "slow"),  # `inboxd once`/`run` against Dovecot and an SMTP capture
    "test_imap_faults": ("server", "slow"),  # a Dovecot of each test's own, cut and restarted
    "test_postgres": ("server",),  # a PostgreSQL of its own
    "test_month": ("slow",),  # a month of mail and sweeps, in process
    "test_imap_tls": ("server",),
    "test_servers": ("server",),
    "test_smtp_faults": ("server",),  # aiosmtpd controllers of its own
    "test_smtp_tls": ("server",),
    "test_security_floods": ("server", "slow"),
    "test_workers_dovecot": ("server", "slow"),  # a Dovecot per team, three `inboxd run` processes  # hundreds of keywords through Dovecot and `inboxd once`
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test `server` and `slow` by its module and the fixtures it uses."""
    for item in items:
        marks = set(MODULE_MARKS.get(item.path.stem, ()))
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            marks.add("server")
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            marks.add("slow")
        for mark in sorted(marks):
            item.add_marker(mark)


@pytest.fixture(autouse=True)
def _no_network_unless_marked_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A test not marked `server` may not connect or bind a TCP/UDP socket (so it belongs to the fast tier)."""
    if request.node.get_closest_marker("server"):
        yield
        return
    tried: list[str] = []

    def guard(method):
        def guarded(sock: socket.socket, address, *args):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                tried.append(f"{method.__name__} {address!r}")
                raise RuntimeError(f"network use in a test not marked `server`: {tried[-1]}")
            return method(sock, address, *args)
        return guarded

    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, guard(getattr(socket.socket, name)))
    yield
    if tried:  # failed here too, in case the code under test swallowed the error
        pytest.fail(f"{request.node.nodeid} uses the network ({', '.join(tried)}) but is not marked `server`: "
                    f"give it a server fixture, or add its module to MODULE_MARKS in tests/conftest.py")


@pytest.fixture(autouse=True)
def _no_team_yet():
    """Each test starts as a new thread does, working for no team (`models.use_team`): none leaks from the last."""
    from inboxd.models import use_team
    use_team("")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A valid config using the shipped rules and templates and a temp SQLite database."""
    return load_config(write_config(tmp_path))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(MONDAY_10)


@pytest.fixture
def fake_daemon(config: Config, clock: FixedClock) -> Daemon:
    """A daemon on an in-memory mailbox and transport, for pipeline tests without servers."""
    return Daemon(config, clock=clock, source=FakeSource(), transport=FakeTransport())


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster for the module (tests/postgres.py)."""
    from postgres import server_for_tests
    with server_for_tests() as server:
        yield server


@pytest.fixture(scope="session")
def month(tmp_path_factory):
    """A simulated month of 1,000 requests (tests/month_data.py), built once for the session: read, don't change."""
    from month_data import simulate
    return simulate(tmp_path_factory.mktemp("month"))


@pytest.fixture(scope="session")
def imap_server():
    """One real IMAP server for the session: Dovecot where installed (always in CI), else pymap."""
    from inboxd.servers import imap_server_for_tests
    server = imap_server_for_tests()
    with server:
        yield server


@pytest.fixture
def mailbox(imap_server):
    """The real IMAP server, emptied before the test."""
    imap_server.reset()
    return imap_server


@pytest.fixture(scope="session")
def hr_server():
    """A second IMAP server, with the user `hr`, for a second team: Dovecot where installed (always in CI), else
    pymap."""
    from inboxd.servers.imap import DovecotServer, ImapServer, PymapServer
    server: ImapServer = DovecotServer(user="hr") if DovecotServer.available() else PymapServer(user="hr")
    with server:
        yield server


@pytest.fixture
def hr_mailbox(hr_server, mailbox):
    """The second team's IMAP server, emptied before the test."""
    hr_server.reset()
    return hr_server


@pytest.fixture
def smtp_capture():
    """A real SMTP server (aiosmtpd) that keeps what it receives."""
    from inboxd.servers import SmtpCapture
    with SmtpCapture() as capture:
        yield capture


@pytest.fixture(scope="session")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (its own CA), and its key."""
    import subprocess
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    folder.chmod(0o755)  # Dovecot's config process reads them as root, but be plain about it
    return cert, key
