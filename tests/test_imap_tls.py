"""IMAP for real over TLS: STARTTLS and implicit TLS against Dovecot, certificates verified."""

from __future__ import annotations

import os
import threading

import pytest
from helpers import make_mail

from inboxd.config import MailboxConfig, Secret
from inboxd.errors import SourceError
from inboxd.servers import DovecotServer, append_messages
from inboxd.source import ImapSource


@pytest.fixture(scope="module")
def dovecot_tls(certificate):
    if not DovecotServer.available():
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError("CI requires Dovecot (apt-get install -y dovecot-imapd, run as root)")
        pytest.skip("Dovecot not installed (bash .ci/run installs it)")
    with DovecotServer(certificate=certificate) as server:
        yield server


def mailbox(server, port: int, tls: str, ca_file=None) -> MailboxConfig:
    return MailboxConfig(host="localhost", port=port, tls=tls, user=server.user,
                         password=Secret(server.password), ca_file=ca_file)


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_reads_mail_over_a_verified_tls_connection(dovecot_tls, certificate, tls):
    dovecot_tls.reset()
    append_messages(dovecot_tls, [make_mail(subject=f"over {tls}")])
    port = dovecot_tls.port if tls == "starttls" else dovecot_tls.tls_port
    source = ImapSource(mailbox(dovecot_tls, port, tls, ca_file=certificate[0]))
    try:
        source.open()
        (fetched,) = source.fetch(source.new_uids(0))
        assert f"Subject: over {tls}".encode() in fetched.raw
        source.wait(0.1, threading.Event())  # IDLE works inside TLS too
    finally:
        source.close()


def test_an_unknown_certificate_is_refused_with_a_clear_error(dovecot_tls):
    source = ImapSource(mailbox(dovecot_tls, dovecot_tls.tls_port, "ssl"))
    with pytest.raises(SourceError, match=r"cannot connect to localhost:\d+ \(ssl\).*CERTIFICATE_VERIFY_FAILED"):
        source.open()
