"""What the local servers share: free ports, start and stop, a child process with its own files."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

HOST = "127.0.0.1"
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


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
