"""Fixtures: a config in a temp folder, a daemon on fakes, and real servers for end-to-end tests."""

from __future__ import annotations

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
