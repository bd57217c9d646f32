"""Shared test helpers: configs, mails, paths."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from inboxd.localconfig import write_local_config

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "corpus"  # real-world mails; origin and licence in its README.md
_ids = itertools.count(1)

def write_config(directory: Path, imap_port: int = 1143, smtp_port: int = 1025, imap_user: str = "inboxd",
                 imap_password: str = "secret", rules: Path | None = None,
                 templates: Path | None = None, batch_size: int = 100, extra: str = "") -> Path:
    """A config.toml for tests in `directory`, using the shipped rules and templates by default."""
    return write_local_config(directory, imap_port, smtp_port, imap_user, imap_password, rules, templates,
                              batch_size, retry_seconds=1, extra=extra,
                              facilities=("ana@example.org", "bo@example.org"))


def make_mail(sender: str = "rosa@example.org", subject: str = "Screen flickers", body: str = "Please help.",
              message_id: str | None = None, headers: dict[str, str] | None = None, to: str = "help@example.org") -> bytes:
    """A small request mail as raw bytes."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = "Mon, 23 Nov 2026 10:00:00 +0100"
    mail["Message-ID"] = message_id or f"<test-{next(_ids)}@example.org>"
    for name, value in (headers or {}).items():
        mail[name] = value
    mail.set_content(body)
    return mail.as_bytes()


def manifest() -> dict[str, str]:
    """corpus path -> expected outcome, from the corpus's MANIFEST.tsv."""
    rows = (CORPUS / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return {row.split("\t")[0]: row.split("\t")[5] for row in rows if row.strip()}


def start_run(config: Path, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """`inboxd run` as the service starts it, in a process group of its own, its output in `log`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), *sys.path])}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "inboxd.cli", "--config", str(config), "run"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def http_get(port: int, path: str) -> tuple[int, str]:
    """The status and body of GET `path` on a local [http] listen; 0 and why when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def wait_for(condition: Callable[[], object], what: str, seconds: float = 90, every: float = 0.1) -> None:
    """Wait until `condition` holds; AssertionError saying `what` did not happen within `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds} s")
        time.sleep(every)
