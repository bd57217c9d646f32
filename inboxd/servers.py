"""Real local mail servers (SMTP capture, Dovecot, pymap) on free 127.0.0.1 ports."""

from __future__ import annotations

import argparse
import itertools
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
from typing import Self

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


class _Managed:
    """start() on enter, stop() on exit."""

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _ChildServer(_Managed):
    """A server run as a child process on a free port, with a temp dir for its files and log."""

    host = HOST
    port = 0

    def __init__(self) -> None:
        """Prepare (not start) the server."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._argv: list[str] = []

    def _command(self, tmp: Path) -> list[str]:
        """Write whatever the server needs under ``tmp`` and return its command line."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the child (unless running) and wait until its port accepts connections."""
        if self._proc is not None:
            return
        self.port = free_port()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"inboxd-{type(self).__name__.lower()}-"))
        self._argv = self._command(self._tmp)
        self._launch()

    def _launch(self) -> None:
        assert self._tmp is not None
        tmp = self._tmp
        # so that ``-m inboxd.servers`` works from a checkout too
        path = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        # stdout/stderr to a file: a child holding pytest's pipes would keep pytest waiting
        with open(tmp / "output.log", "ab") as out:
            self._proc = proc = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                                 env=env)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.01)
        logs = "".join(p.read_text(errors="replace") for p in sorted(tmp.glob("*.log")))
        self.stop()
        raise RuntimeError(f"{proc.args!r} did not listen on port {self.port}:\n{logs[-3000:]}")

    def pause(self) -> None:
        """Stop the server process, as an admin restarting it would; resume() brings it back, same port and mail."""
        self._terminate()

    def resume(self) -> None:
        """Start the paused server again."""
        if self._proc is None:
            self._launch()

    def _pid(self) -> int:
        """The pid to send SIGTERM to."""
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        """SIGTERM the server, wait for it to exit (SIGKILL after 10 s) and remove its files."""
        self._terminate()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    def _terminate(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.kill(self._pid(), signal.SIGTERM)
                self._proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._proc = None


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

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        """Prepare a capture; with ``directory``, each mail's data also goes to a ``.eml`` file there."""
        self.host = HOST
        self.port = port or free_port()
        self.directory = Path(directory) if directory is not None else None
        self._messages: list[CapturedMail] = []
        self._cond = threading.Condition()
        self._controller = Controller(
            self, hostname=HOST, port=self.port, decode_data=False, enable_SMTPUTF8=True
        )

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
        """Stop listening."""
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


class ImapServer(_ChildServer):
    """An IMAP server with one user: what DovecotServer and PymapServer share."""

    def __init__(self, user: str = "inboxd", password: str = "secret") -> None:
        """Prepare (not start) a server with one user."""
        super().__init__()
        self.user, self.password = user, password

    def connect(self) -> IMAPClient:
        """Return an IMAPClient logged in as the server's user."""
        client = IMAPClient(self.host, self.port, ssl=False, timeout=30)
        # imapclient sends a command's final CRLF in a separate write: with Nagle on, pymap
        # (whose delayed ACK holds it back) answers every command ~40 ms late
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


_DOVECOT_CONF = """\
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
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
  inet_listener imaps {{
    port = {tls_port}
    ssl = yes
  }}
}}
"""


class DovecotServer(ImapServer):
    """A private Dovecot 2.3 instance (needs root) with one maildir user, touching no system config."""

    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"

    def __init__(self, user: str = "inboxd", password: str = "secret",
                 certificate: tuple[Path, Path] | None = None) -> None:
        """Prepare (not start); with a (cert, key) pair, STARTTLS on `port` and TLS on `tls_port`."""
        super().__init__(user, password)
        self.certificate = certificate
        self.tls_port = 0

    @classmethod
    def available(cls) -> bool:
        """True if Dovecot is installed, runnable, and we are root (mail uids need it)."""
        if os.geteuid() != 0 or not os.access(cls.binary, os.X_OK):
            return False
        try:
            return subprocess.run([cls.binary, "--version"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    def _command(self, tmp: Path) -> list[str]:
        """Write dovecot.conf, the passwd file and the user's home; return the master's command."""
        nobody = pwd.getpwnam("nobody")
        # mail processes may not run as root, so the user is nobody; it and auth (dovecot)
        # must traverse every directory above the maildir
        home = tmp / "home" / self.user
        home.mkdir(parents=True)
        tmp.chmod(0o755)
        home.parent.chmod(0o755)
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        passwd = tmp / "passwd"
        ids = f"{nobody.pw_uid}:{nobody.pw_gid}"
        passwd.write_text(f"{self.user}:{{PLAIN}}{self.password}:{ids}::{home}::\n")
        passwd.chmod(0o644)
        conf = tmp / "dovecot.conf"
        self.tls_port = free_port() if self.certificate else 0
        ssl = (f"ssl = yes\nssl_cert = <{self.certificate[0]}\nssl_key = <{self.certificate[1]}"
               if self.certificate else "ssl = no")
        conf.write_text(_DOVECOT_CONF.format(instance=f"inboxd-{tmp.name}", root=tmp, port=self.port,
                                             tls_port=self.tls_port, ssl=ssl))
        # -F keeps the master our child, so stop() can wait() on it and leaves no zombie
        return [self.binary, "-F", "-c", str(conf)]

    def pause(self) -> None:
        """Stop Dovecot with every session it serves (left alone, they would outlive the master)."""
        self.cut_connections()
        super().pause()

    def cut_connections(self) -> int:
        """Kill the processes serving logged-in sessions, as a crash or a network cut would; how many."""
        master, cut = self._pid(), 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                name = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
            except (OSError, IndexError):
                continue
            if int(fields[1]) == master and name == "imap":
                os.kill(int(stat.parent.name), signal.SIGKILL)
                cut += 1
        return cut

    def _pid(self) -> int:
        """The master's pid from base_dir/master.pid."""
        assert self._tmp is not None
        try:
            return int((self._tmp / "run" / "master.pid").read_text())
        except (OSError, ValueError):
            return super()._pid()


class PymapServer(ImapServer):
    """pymap's in-memory ``dict`` backend in a subprocess: one user, an empty INBOX."""

    def _command(self, tmp: Path) -> list[str]:
        """pymap's command line (it has no ``__main__``)."""
        return [sys.executable, "-c", "from pymap.main import main; main()",
                "--no-tls", "--host", HOST, "--port", str(self.port), "--pid-file", str(tmp / "pymap.pid"),
                # optional extras would otherwise listen on fixed ports
                "--no-service", "admin", "--no-service", "managesieve", "--no-service", "swim",
                "dict", "--demo-user", self.user, "--demo-password", self.password]


def append_messages(
    server: ImapServer, messages: Iterable[bytes], folder: str = "INBOX", batch: int = 200
) -> int:
    """Append raw mails to ``folder`` over one connection, MULTIAPPEND-batched where offered."""
    count, pending = 0, iter(messages)
    with server.connect() as client:
        multi = client.has_capability("MULTIAPPEND") and client.has_capability("LITERAL+")
        while chunk := list(itertools.islice(pending, batch if multi else 1)):
            if multi:
                client.multiappend(folder, chunk)
            else:
                client.append(folder, chunk[0])
            count += len(chunk)
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
    smtp = parser.add_subparsers(dest="server", required=True).add_parser("smtp", help="file every mail")
    smtp.add_argument("--port", type=int, required=True)
    smtp.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = {signal.SIGTERM, signal.SIGINT}
    # block before the server thread starts, so it inherits the mask and sigwait gets the signal
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    with SmtpCapture(args.dir, args.port):
        signal.sigwait(stop)


if __name__ == "__main__":
    main()
