"""Log lines: timestamped on a terminal, plain with journald's priority under systemd, JSON with `[log] format`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from inboxd.config import load_config
from inboxd.errors import ConfigError
from inboxd.logs import formatter, under_journald

from helpers import REPO, write_config

UNSAFE = "[commands]\nrequire_secret = false\n"  # makes the daemon log a WARNING at start, with no server needed


def record(message: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("inboxd.daemon", level, __file__, 1, message, None, None)


def test_text_is_timestamped_on_a_terminal_and_plain_with_priorities_under_journald():
    assert formatter("text", journald=False).format(record("IMAP: gone")).endswith(" WARNING IMAP: gone")
    assert formatter("text", journald=False).format(record("x"))[:4].isdigit()  # 2026-11-30 08:00:00 …
    assert formatter("text", journald=True).format(record("IMAP: gone")) == "<4>WARNING IMAP: gone"
    assert formatter("text", journald=True).format(record("refused:\nrules/a.toml:3: bad", logging.ERROR)) \
        == "<3>ERROR refused:\n<3>rules/a.toml:3: bad"  # every line keeps its priority in the journal


def test_json_is_one_object_a_line():
    line = formatter("json", journald=False).format(record("IMAP: 3 new mail(s) in \"INBOX\"", logging.INFO))
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "inboxd.daemon"
    assert entry["message"] == "IMAP: 3 new mail(s) in \"INBOX\"" and entry["time"].endswith("+00:00")
    assert "\n" not in line
    journal = formatter("json", journald=True).format(record("x"))
    assert journal.startswith("<4>{") and json.loads(journal[3:])["message"] == "x"


def test_journald_is_recognised_by_its_stream_not_by_the_variable_alone(tmp_path, monkeypatch):
    with open(tmp_path / "journal", "w") as stream, open(tmp_path / "other", "w") as other:
        found = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{found.st_dev}:{found.st_ino}")
        assert under_journald(stream) and not under_journald(other)  # a child with its stderr redirected
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not under_journald(stream)


def test_log_format_is_validated_with_the_config(tmp_path):
    with pytest.raises(ConfigError, match=r"config.toml:\d+: \[log\] format: unknown format 'xml': use text or json"):
        load_config(write_config(tmp_path, extra='[log]\nformat = "xml"\n'))
    assert load_config(write_config(tmp_path)).log_format == "text"


@pytest.mark.parametrize("style", ["text", "json"])
def test_inboxd_under_journald_writes_what_the_config_asks_for(tmp_path, style):
    config = write_config(tmp_path, extra=f'{UNSAFE}[log]\nformat = "{style}"\n')
    with open(tmp_path / "stderr", "w") as stderr:
        found = os.fstat(stderr.fileno())
        env = {**os.environ, "PYTHONPATH": str(REPO), "JOURNAL_STREAM": f"{found.st_dev}:{found.st_ino}"}
        done = subprocess.run([sys.executable, "-m", "inboxd", "--config", str(config), "sweep"], env=env,
                              stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=60)
    lines = (tmp_path / "stderr").read_text().splitlines()
    assert done.returncode == 0 and "sent 0 mail(s)" in done.stdout, lines
    warning = next(line for line in lines if "require_secret = false" in line)
    if style == "text":
        assert warning.startswith(f"<4>WARNING {config}: [commands] require_secret = false"), warning
    else:
        assert warning.startswith("<4>{") and json.loads(warning[3:])["level"] == "WARNING", warning
