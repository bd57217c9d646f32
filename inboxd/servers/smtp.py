"""The SMTP capture: aiosmtpd keeping (and filing) every mail it gets, in this process or its own."""

from __future__ import annotations

import os
import sys
import threading
import time
from base64 import b64decode
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import HOST, _ChildServer, _Managed, free_port

if TYPE_CHECKING:  # aiosmtpd is the demo extra's: imported when a capture is made, not with the package
    from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

    from .oauth import TokenServer


@dataclass(frozen=True)
class CapturedMail:
    """One mail as received by the SMTP capture."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


def count_files(directory: Path) -> int:
    """Count the complete mails a capture has written to ``directory``."""
    with os.scandir(directory) as entries:
        return sum(1 for e in entries if e.name.endswith(".eml") and not e.name.startswith("."))


class SmtpCapture(_Managed):
    """An aiosmtpd server on 127.0.0.1 that keeps (and optionally files) every mail it gets."""

    def __init__(self, directory: Path | None = None, port: int | None = None,
                 login: tuple[str, str] | None = None, tokens: TokenServer | None = None) -> None:
        """Prepare a capture; with ``directory``, each mail's data also goes to a ``.eml`` file there.

        With ``login`` (user, password) or ``tokens``, mail is taken only after AUTH with that password
        (PLAIN, LOGIN) or with a token the ``TokenServer`` issued and still honours (XOAUTH2).
        """
        self.host = HOST
        self.port = port or free_port()
        self.directory = Path(directory) if directory is not None else None
        self.login, self.tokens = login, tokens
        self.refused = 0  # logins refused
        self._messages: list[CapturedMail] = []
        self._cond = threading.Condition()
        from aiosmtpd.controller import Controller
        auth: dict[str, Any] = {}
        if login or tokens:
            auth = {"auth_required": True, "auth_require_tls": False, "authenticator": self._password,
                    "auth_exclude_mechanism": [*(["XOAUTH2"] if not tokens else []),
                                               *(["PLAIN", "LOGIN"] if not login else [])]}
        self._controller = Controller(
            self, hostname=HOST, port=self.port, decode_data=False, enable_SMTPUTF8=True, **auth
        )

    def _password(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                  data: Any) -> AuthResult:
        from aiosmtpd.smtp import AuthResult
        ok = self.login is not None and (data.login, data.password) == tuple(s.encode() for s in self.login)
        self.refused += not ok
        return AuthResult(success=ok, handled=False)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802 (aiosmtpd's hook name)
        """``AUTH XOAUTH2 <base64 of user=U^Aauth=Bearer T^A^A>``: a token of ours, for our user."""
        from aiosmtpd.smtp import AuthResult
        try:
            fields = dict(part.split("=", 1) for part in b64decode(args[1]).decode().split("\1") if part)
        except (IndexError, ValueError):
            return AuthResult(success=False, handled=False)
        token = fields.get("auth", "").removeprefix("Bearer ")
        ok = self.tokens is not None and fields.get("user") == self.tokens.user and self.tokens.active(token)
        self.refused += not ok
        return AuthResult(success=ok, handled=False, auth_data=fields.get("user"))

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        """Store the mail (aiosmtpd handler hook)."""
        data = envelope.original_content or b""
        mail = CapturedMail(envelope.mail_from or "", tuple(envelope.rcpt_tos), data)
        with self._cond:
            if self.directory is not None:
                name = f"{time.time_ns()}.{os.getpid()}.{len(self._messages):08d}.eml"
                (self.directory / f".{name}").write_bytes(data)
                # rename so another process counting files never sees half a mail
                os.replace(self.directory / f".{name}", self.directory / name)
            self._messages.append(mail)
            self._cond.notify_all()
        return "250 OK"

    @property
    def messages(self) -> list[CapturedMail]:
        """A snapshot of the mails received so far."""
        with self._cond:
            return list(self._messages)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` mails arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._messages) >= count, timeout)

    def start(self) -> None:
        """Start listening."""
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._controller.start()

    def stop(self) -> None:
        """Stop listening (again: nothing)."""
        if self._controller._thread is not None:
            self._controller.stop()

    @staticmethod
    def spawn(directory: Path) -> SmtpProcess:
        """Start a capture writing to ``directory`` in a separate process; stop() it when done."""
        process = SmtpProcess(directory)
        process.start()
        return process


class SmtpProcess(_ChildServer):
    """A capture in a child process (``python -m inboxd.servers smtp``), counted by its files."""

    def __init__(self, directory: Path) -> None:
        """Prepare (not start) a capture writing to ``directory``."""
        super().__init__()
        self.directory = Path(directory)

    def _command(self, tmp: Path) -> list[str]:
        """``python -m inboxd.servers smtp``."""
        port, directory = str(self.port), str(self.directory)
        return [sys.executable, "-m", "inboxd.servers", "smtp", "--port", port, "--dir", directory]

    def wait_for(self, count: int, timeout: float) -> bool:
        """Poll the directory until it holds ``count`` mails; False on timeout."""
        deadline = time.monotonic() + timeout
        while count_files(self.directory) < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True
