"""SMTP for real: STARTTLS with a verified certificate and a login, against aiosmtpd."""

from __future__ import annotations

import ssl
from dataclasses import replace

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from inboxd.config import Secret, SmtpConfig
from inboxd.errors import DeliveryError, SmtpLoginRefused
from inboxd.outbox import SmtpTransport
from inboxd.servers import free_port

MAIL = b"From: help@example.org\r\nTo: rosa@example.org\r\nSubject: [IT-1] hi\r\n\r\nhello\r\n"


class Keeper:
    """An aiosmtpd handler that keeps what it receives and who logged in."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.received.append((session.auth_data, envelope.original_content))
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, auth_data):
    def text(value):
        return value.decode() if isinstance(value, bytes) else value
    ok = isinstance(auth_data, LoginPassword) and (text(auth_data.login), text(auth_data.password)) == ("help", "s3cret")
    return AuthResult(success=ok, handled=False, auth_data="help" if ok else None)  # 535 on failure


@pytest.fixture
def tls_server(certificate):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    keeper = Keeper()
    controller = Controller(keeper, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True, auth_required=True, authenticator=_authenticate)
    controller.start()
    yield controller.port, keeper
    controller.stop()


def config(port: int, **changes) -> SmtpConfig:
    base = SmtpConfig(host="localhost", port=port, tls="starttls", user="help", password=Secret("s3cret"))
    return replace(base, **changes)


def test_starttls_and_login_with_a_trusted_ca(tls_server, certificate):
    port, keeper = tls_server
    transport = SmtpTransport(config(port, ca_file=certificate[0]))
    transport.send("help@example.org", ["rosa@example.org"], MAIL)
    transport.close()
    assert keeper.received == [("help", MAIL)]


def test_an_unknown_certificate_is_refused_by_default(tls_server):
    port, keeper = tls_server
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        SmtpTransport(config(port)).send("help@example.org", ["rosa@example.org"], MAIL)
    assert keeper.received == []


def test_a_wrong_password_is_a_refused_login_the_mail_waits(tls_server, certificate):
    port, keeper = tls_server
    transport = SmtpTransport(config(port, ca_file=certificate[0], password=Secret("wrong")))
    # not the mail's fault: it stays pending, and repeated refusals stop `run` (test_check_connect.py)
    with pytest.raises(SmtpLoginRefused, match="535"):
        transport.send("help@example.org", ["rosa@example.org"], MAIL)
    assert keeper.received == []
