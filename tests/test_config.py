"""Config loading: valid files load; every problem names file, line, key and why."""

from pathlib import Path

import pytest
from helpers import REPO, write_config

from inboxd.config import load_config
from inboxd.errors import ConfigError


def test_example_config_documents_every_key_and_loads(monkeypatch, tmp_path):
    monkeypatch.setenv("INBOXD_IMAP_PASSWORD", "s3cr3t-imap")
    monkeypatch.setenv("INBOXD_SMTP_PASSWORD", "y")
    config = load_config(REPO / "config.example.toml")
    assert config.team.ref_prefix == "IT"
    assert config.mailbox.password.value == "s3cr3t-imap"
    assert "s3cr3t" not in repr(config.mailbox)  # secrets never show in reprs
    assert str(config.service.default_due) == "3 business days"
    assert config.queues["default"] == ("ana@example.org", "bo@example.org")


def test_defaults_are_converted(tmp_path):
    config = load_config(write_config(tmp_path))
    assert config.service.default_due.business and config.service.default_due.unit == "days"
    assert config.calendar.workdays == frozenset(range(5))
    assert config.database_url == f"sqlite:///{tmp_path / 'inboxd.db'}"


def _broken(tmp_path: Path, old: str, new: str) -> ConfigError:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    error = _broken(tmp_path, 'done_folder = "Processed"', 'done_foldr = "Processed"')
    assert len(error.problems) == 1
    problem = error.problems[0]
    assert problem.startswith(f"{tmp_path / 'config.toml'}:19: [mailbox] done_foldr: unknown key")
    assert "did you mean 'done_folder'" in problem


def test_wrong_type_and_missing_value_reported_together(tmp_path):
    path = write_config(tmp_path)
    text = path.read_text().replace('ref_prefix = "IT"\n', "").replace('tls = "none"\nuser', 'tls = "none"\nuser = 7\n#', 1)
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = "\n".join(caught.value.problems)
    assert "[team] ref_prefix: missing (required)" in problems
    assert "[mailbox] user: expected a string, got 7" in problems


def test_plain_connection_only_to_localhost(tmp_path):
    error = _broken(tmp_path, 'host = "127.0.0.1"', 'host = "imap.example.org"')
    assert "plain connections are only allowed to localhost" in str(error)


def test_inline_password_refused(tmp_path):
    error = _broken(tmp_path, 'password_file = "imap-password"', 'password = "hunter2"')
    assert "use password_env or password_file" in str(error)
    assert "hunter2" not in str(error)


def test_unknown_queue_member_and_missing_env(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_PW", raising=False)
    path = write_config(tmp_path)
    text = path.read_text().replace('ops = ["ana@example.org"]', 'ops = ["zed@example.org"]')
    text = text.replace('password_file = "imap-password"', 'password_env = "NOPE_PW"')
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = "\n".join(caught.value.problems)
    assert "[queues] ops: 'zed@example.org' is not in [team] members" in problems
    assert "environment variable NOPE_PW is not set" in problems


def test_bad_duration_timezone_and_toml_syntax(tmp_path):
    error = _broken(tmp_path, 'timezone = "Europe/Berlin"', 'timezone = "Mars/Olympus"\n[service]\ndefault_due = "soon"')
    problems = "\n".join(error.problems)
    assert "unknown timezone 'Mars/Olympus'" in problems
    assert "[service] default_due: not a duration: 'soon'" in problems
    error = _broken(tmp_path, "[smtp]", "[smtp")
    assert "invalid TOML" in str(error) and ":22:" in str(error)


def test_ca_file_must_exist_and_is_resolved_next_to_the_config(tmp_path):
    error = _broken(tmp_path, 'tls = "none"\nretry_seconds', 'tls = "none"\nca_file = "certs/ca.pem"\nretry_seconds')
    assert f"[smtp] ca_file: no such file: {tmp_path / 'certs/ca.pem'}" in str(error)
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert load_config(tmp_path / "config.toml").smtp.ca_file == tmp_path / "certs" / "ca.pem"


def test_plain_connection_elsewhere_only_when_explicitly_allowed(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('host = "127.0.0.1"\nport = 1143', 'host = "imap.lan"\nport = 1143\n'
                                             'allow_plain = true', 1))
    config = load_config(path)
    assert (config.mailbox.host, config.mailbox.tls) == ("imap.lan", "none")
