"""Real IMAP servers for tests, the demo and benchmarks: a private Dovecot (as root), or pymap."""

from __future__ import annotations

import copy
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from imapclient import IMAPClient

from .base import HOST, _ChildServer, free_port


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

    def as_user(self, user: str) -> ImapServer:
        """This server seen as another of its users (DovecotServer's `more_users`): connect and reset as them."""
        other = copy.copy(self)
        other.user = user
        return other

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
{fsync}namespace inbox {{
  inbox = yes
  separator = /
}}
auth_mechanisms = plain login{oauth2_mechanisms}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
{oauth2_passdb}userdb {{
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


_OAUTH2_PASSDB = """\
auth_failure_delay = 0
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/oauth2.conf.ext
}}
"""
_OAUTH2_CONF = """\
introspection_mode = post
introspection_url = {url}
username_attribute = username
active_attribute = active
active_value = true
"""


class DovecotServer(ImapServer):
    """A private Dovecot 2.3 instance (needs root) with one maildir user, touching no system config."""

    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"

    def __init__(self, user: str = "inboxd", password: str = "secret",
                 certificate: tuple[Path, Path] | None = None, introspection_url: str | None = None,
                 fsync: str | None = "never", more_users: Sequence[str] = ()) -> None:
        """Prepare (not start); with a (cert, key) pair, STARTTLS on `port` and TLS on `tls_port`.

        With an `introspection_url` (a `TokenServer`'s), XOAUTH2 and OAUTHBEARER logins are checked there.
        `fsync` is Dovecot's `mail_fsync`: "never" by default (throwaway mail: speed matters, durability
        does not); None leaves Dovecot's own default ("optimized"), as a mail server in the field has it.
        `more_users`: users beside `user`, with the same password (`as_user` reaches them).
        """
        super().__init__(user, password)
        self.certificate = certificate
        self.introspection_url = introspection_url
        self.fsync = fsync
        self.more_users = tuple(more_users)
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
        ids, lines = f"{nobody.pw_uid}:{nobody.pw_gid}", []
        for user in (self.user, *self.more_users):
            home = tmp / "home" / user
            home.mkdir(parents=True)
            os.chown(home, nobody.pw_uid, nobody.pw_gid)
            lines.append(f"{user}:{{PLAIN}}{self.password}:{ids}::{home}::\n")
        tmp.chmod(0o755)
        (tmp / "home").chmod(0o755)
        passwd = tmp / "passwd"
        passwd.write_text("".join(lines))
        passwd.chmod(0o644)
        conf = tmp / "dovecot.conf"
        self.tls_port = free_port() if self.certificate else 0
        ssl = (f"ssl = yes\nssl_cert = <{self.certificate[0]}\nssl_key = <{self.certificate[1]}"
               if self.certificate else "ssl = no")
        oauth2 = self.introspection_url is not None
        if oauth2:
            (tmp / "oauth2.conf.ext").write_text(_OAUTH2_CONF.format(url=self.introspection_url))
        conf.write_text(_DOVECOT_CONF.format(instance=f"inboxd-{tmp.name}", root=tmp, port=self.port,
                                             tls_port=self.tls_port, ssl=ssl,
                                             fsync=f"mail_fsync = {self.fsync}\n" if self.fsync else "",
                                             oauth2_mechanisms=" xoauth2 oauthbearer" if oauth2 else "",
                                             oauth2_passdb=_OAUTH2_PASSDB.format(root=tmp) if oauth2 else ""))
        # -F keeps the master our child, so stop() can wait() on it and leaves no zombie
        return [self.binary, "-F", "-c", str(conf)]

    def setting(self, name: str) -> str:
        """The value this running instance has for a setting, as `doveconf` reads its config (defaults included)."""
        assert self._tmp is not None
        doveconf = shutil.which("doveconf") or "/usr/bin/doveconf"
        return subprocess.run([doveconf, "-c", str(self._tmp / "dovecot.conf"), "-h", name], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()

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
                try:
                    os.kill(int(stat.parent.name), signal.SIGKILL)
                    cut += 1
                except ProcessLookupError:
                    pass  # the session ended on its own meanwhile
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
