"""Real local mail servers (SMTP capture, Dovecot, pymap) on free 127.0.0.1 ports."""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from imapclient import IMAPClient

HOST = "127.0.0.1"
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 10.0) -> None:
    """Wait until ``port`` accepts connections; stop ``proc`` and raise if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.01)
    _stop_process(proc, proc.pid)
    text = log.read_text(errors="replace") if log.exists() else ""
    raise RuntimeError(f"{proc.args!r} did not listen on port {port}:\n{text[-2000:]}")


def _popen(cmd: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdin from /dev/null and output to ``log``, so it holds no pipe of ours."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, **kwargs)


def _stop_process(proc: subprocess.Popen[bytes], pid: int) -> None:
    """Send SIGTERM to ``pid`` and wait for ``proc`` to exit, killing it if it hangs."""
    if proc.poll() is None:
        try:
            os.kill(pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()


# --- SMTP ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapturedMail:
    """One mail as received by the SMTP capture."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


def _envelope_header(mail: CapturedMail) -> bytes:
    """Return the Return-Path/X-Envelope-To lines a maildrop file starts with."""
    return f"Return-Path: <{mail.mail_from}>\r\nX-Envelope-To: {', '.join(mail.rcpt_tos)}\r\n".encode()


def count_files(directory: Path) -> int:
    """Count the complete mails a capture has written to ``directory``."""
    with os.scandir(directory) as entries:
        return sum(1 for e in entries if e.name.endswith(".eml") and not e.name.startswith("."))


def load_files(directory: Path) -> list[CapturedMail]:
    """Read back the mails a capture wrote to ``directory``, oldest first."""
    mails = []
    for path in sorted(Path(directory).glob("[!.]*.eml")):
        ret, env, data = path.read_bytes().split(b"\r\n", 2)
        mail_from = ret.removeprefix(b"Return-Path: <").removesuffix(b">").decode()
        rcpts = env.removeprefix(b"X-Envelope-To: ").decode()
        mails.append(CapturedMail(mail_from, tuple(rcpts.split(", ")) if rcpts else (), data))
    return mails


class SmtpCapture:
    """An aiosmtpd server on 127.0.0.1 that keeps (and optionally files) every mail it gets."""

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        """Prepare a capture; ``directory`` additionally gets one ``.eml`` file per mail."""
        self.host = HOST
        self.port = port or free_port()
        self.directory = Path(directory) if directory is not None else None
        self._messages: list[CapturedMail] = []
        self._cond = threading.Condition()
        self._controller = Controller(self, hostname=HOST, port=self.port, decode_data=False, enable_SMTPUTF8=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        """Store the mail (aiosmtpd handler hook)."""
        data = envelope.original_content or b""
        mail = CapturedMail(envelope.mail_from or "", tuple(envelope.rcpt_tos), data)
        with self._cond:
            seq = len(self._messages)
            if self.directory is not None:
                name = f"{time.time_ns()}.{os.getpid()}.{seq:08d}.eml"
                tmp = self.directory / f".{name}.tmp"
                tmp.write_bytes(_envelope_header(mail) + data)
                # rename so another process counting files never sees half a mail
                os.replace(tmp, self.directory / name)
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
        """Stop listening."""
        self._controller.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def spawn(cls, directory: Path, port: int | None = None) -> SmtpProcess:
        """Run a capture writing to ``directory`` in a separate process."""
        return SmtpProcess(directory, port)


class SmtpProcess:
    """A capture running in a child process (``python -m inboxd.servers smtp``)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        """Start the child and wait until it accepts connections."""
        self.host = HOST
        self.port = port or free_port()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "inboxd.servers", "smtp", "--port", str(self.port), "--dir", str(directory)]
        self._tmp = tempfile.TemporaryDirectory(prefix="inboxd-smtp-")
        log = Path(self._tmp.name) / "smtp.log"
        self._proc = _popen(cmd, log, env={**os.environ, "PYTHONPATH": path})
        _wait_port(self.port, self._proc, log)

    def count(self) -> int:
        """Number of mails written so far."""
        return count_files(self.directory)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Poll the directory until it holds ``count`` mails; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.count() < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self) -> None:
        """Stop the child process."""
        _stop_process(self._proc, self._proc.pid)
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- IMAP ---------------------------------------------------------------------------------


class ImapServer:
    """What DovecotServer and PymapServer share: address, login, context manager, reset."""

    host = HOST
    port = 0

    def __init__(self, user: str = "inboxd", password: str = "secret") -> None:
        """Prepare (not start) a server with one user."""
        self.user, self.password = user, password
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server, wait for it to exit and remove its files."""
        if self._proc is not None:
            _stop_process(self._proc, self._pid())
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._proc = self._tmp = None

    def _pid(self) -> int:
        """The pid to send SIGTERM to."""
        assert self._proc is not None
        return self._proc.pid

    def connect(self) -> IMAPClient:
        """Return an IMAPClient logged in as the server's user."""
        client = IMAPClient(self.host, self.port, ssl=False, timeout=30)
        # imapclient sends a command's final CRLF in a separate write: with Nagle on, pymap
        # (whose delayed ACK holds it back) answers each command ~40 ms late
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.login(self.user, self.password)
        return client

    def reset(self) -> None:
        """Delete every folder but INBOX and empty INBOX."""
        with self.connect() as client:
            for _flags, _delim, name in sorted(client.list_folders(), key=lambda f: -len(f[2])):
                if name.upper() != "INBOX":
                    try:
                        client.delete_folder(name)
                    except IMAPClient.Error:
                        pass  # an implicit parent (\Noselect) vanishes with its last child
            if left := [f[2] for f in client.list_folders() if f[2].upper() != "INBOX"]:
                raise RuntimeError(f"reset could not delete {left}")
            for _flags, _delim, name in client.list_sub_folders():
                if name.upper() != "INBOX":
                    client.unsubscribe_folder(name)
            client.select_folder("INBOX")
            if uids := client.search("ALL"):
                client.delete_messages(uids)
                client.expunge()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_DOVECOT_CONF = """\
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
mail_location = maildir:~/Maildir
mail_max_userip_connections = 100
# throwaway mail: speed matters, durability does not
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
}}
"""


class DovecotServer(ImapServer):
    """A private Dovecot 2.3 instance (needs root) with one maildir user."""

    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"

    @classmethod
    def available(cls) -> bool:
        """True if Dovecot is installed, runnable, and we are root (mail uids need it)."""
        if os.geteuid() != 0 or not os.access(cls.binary, os.X_OK):
            return False
        try:
            return subprocess.run([cls.binary, "--version"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    def start(self) -> None:
        """Write the config, start the master and wait for the IMAP port."""
        self.port = free_port()
        root = self._tmp = Path(tempfile.mkdtemp(prefix="inboxd-dovecot-"))
        nobody = pwd.getpwnam("nobody")
        # mail processes run as nobody and auth as dovecot: both must traverse the tree
        root.chmod(0o755)
        home = root / "home" / self.user
        home.mkdir(parents=True)
        (root / "home").chmod(0o755)
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        passwd = root / "passwd"
        passwd.write_text(f"{self.user}:{{PLAIN}}{self.password}:{nobody.pw_uid}:{nobody.pw_gid}::{home}::\n")
        passwd.chmod(0o644)
        conf = root / "dovecot.conf"
        conf.write_text(_DOVECOT_CONF.format(instance=f"inboxd-{root.name}", root=root, port=self.port))
        # -F keeps the master our child, so stop() can wait() on it and no zombie is left behind;
        # config errors go to master.out, later ones to dovecot.log
        self._proc = _popen([self.binary, "-F", "-c", str(conf)], root / "master.out")
        try:
            _wait_port(self.port, self._proc, root / "master.out")
        except RuntimeError:
            self.stop()
            raise

    def _pid(self) -> int:
        """The master's pid from base_dir/master.pid."""
        assert self._tmp is not None
        try:
            return int((self._tmp / "run" / "master.pid").read_text())
        except (OSError, ValueError):
            return super()._pid()


class PymapServer(ImapServer):
    """pymap's in-memory ``dict`` backend in a subprocess, one user, empty INBOX."""

    def start(self) -> None:
        """Start pymap and wait for the IMAP port."""
        self.port = free_port()
        self._tmp = Path(tempfile.mkdtemp(prefix="inboxd-pymap-"))
        cmd = [sys.executable, "-c", "from pymap.main import main; main()",
               "--no-tls", "--host", HOST, "--port", str(self.port),
               "--pid-file", f"inboxd-pymap-{self.port}.pid",
               # optional extras would otherwise listen on fixed ports
               "--no-service", "admin", "--no-service", "managesieve", "--no-service", "swim",
               "dict", "--demo-user", self.user, "--demo-password", self.password]
        self._proc = _popen(cmd, self._tmp / "pymap.log")
        try:
            _wait_port(self.port, self._proc, self._tmp / "pymap.log")
        except RuntimeError:
            self.stop()
            raise


def append_messages(
    server: ImapServer, messages: Iterable[bytes], folder: str = "INBOX", batch: int = 200
) -> int:
    """Append raw mails to ``folder`` over one connection; MULTIAPPEND batches where offered."""
    count = 0
    with server.connect() as client:
        multi = client.has_capability("MULTIAPPEND") and client.has_capability("LITERAL+")
        chunk: list[bytes] = []
        for message in messages:
            count += 1
            if not multi:
                client.append(folder, message)
                continue
            chunk.append(message)
            if len(chunk) >= batch:
                client.multiappend(folder, chunk)
                chunk = []
        if chunk:
            client.multiappend(folder, chunk)
    return count


def imap_server_for_tests() -> ImapServer:
    """Dovecot if available, else pymap; in CI (``CI=true``) Dovecot is mandatory."""
    if DovecotServer.available():
        return DovecotServer()
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError("CI requires Dovecot (apt-get install -y dovecot-imapd, run as root), not pymap")
    return PymapServer()


def main(argv: list[str] | None = None) -> None:
    """``python -m inboxd.servers smtp --port P --dir D``: run a capture until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m inboxd.servers")
    sub = parser.add_subparsers(dest="server", required=True)
    smtp = sub.add_parser("smtp", help="SMTP capture writing one .eml per mail")
    smtp.add_argument("--port", type=int, required=True)
    smtp.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = {signal.SIGTERM, signal.SIGINT}
    # block before the server thread starts so it inherits the mask and sigwait gets the signal
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    with SmtpCapture(args.dir, args.port):
        signal.sigwait(stop)


if __name__ == "__main__":
    main()
