"""A private PostgreSQL cluster for tests: initdb into a temp dir, run as the `postgres` user."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from inboxd.servers import HOST, free_port


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """One throwaway cluster with a superuser `inboxd` and trust auth on 127.0.0.1."""

    user = "inboxd"

    @staticmethod
    def available() -> bool:
        """PostgreSQL's server binaries are installed and we may run them as `postgres` (needs root)."""
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
        return _binaries() is not None and os.geteuid() == 0

    def __init__(self, **settings: object) -> None:
        """Prepare (not start) a server; `settings` are server settings beside the tests' (max_connections=300)."""
        self.settings = settings

    def __enter__(self) -> PostgresServer:
        bin_dir = _binaries()
        assert bin_dir is not None
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="inboxd-postgres-"))
        shutil.chown(self.tmp, "postgres", "postgres")
        data = self.tmp / "data"
        subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", self.user],
                       user="postgres", group="postgres", check=True, capture_output=True)
        with open(self.tmp / "server.log", "wb") as log:
            self.proc = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.tmp),
                 "-c", f"listen_addresses={HOST}", "-c", "fsync=off",
                 *(f"-c{name}={value}" for name, value in self.settings.items())],
                user="postgres", group="postgres", stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while subprocess.run([str(bin_dir / "pg_isready"), "-h", HOST, "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not start:\n{(self.tmp / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)
        return self

    def url(self, database: str = "postgres") -> str:
        """A database URL inboxd accepts."""
        return f"postgresql://{self.user}@{HOST}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh, empty database; its URL."""
        import psycopg2
        connection = psycopg2.connect(host=HOST, port=self.port, user=self.user, dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return self.url(name)

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: don't wait for clients to leave
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def server_for_tests() -> PostgresServer:
    """A private PostgreSQL server to use as a context manager; CI requires one, elsewhere its tests skip."""
    import pytest  # this module is also imported by benches, which have no pytest to spare
    if not PostgresServer.available():
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError("CI requires PostgreSQL (apt-get install -y postgresql, run as root)")
        pytest.skip("PostgreSQL server binaries not installed (bash .ci/run installs them)")
    return PostgresServer()
