"""`inboxd init DIR [--systemd]`: the admin's own starter files, which pass `check` as written, never overwritten."""

from __future__ import annotations

import stat

import pytest
from click.testing import CliRunner
from inboxd.cli import cli
from inboxd.config import load_config
from inboxd.errors import ConfigError
from inboxd.localconfig import SHIPPED

PASSWORDS = {"INBOXD_IMAP_PASSWORD": "imap-secret", "INBOXD_SMTP_PASSWORD": "smtp-secret"}


def init(*args: str, env: dict[str, str] | None = None):
    result = CliRunner().invoke(cli, ["init", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_init_writes_a_config_rules_and_templates_that_pass_check(tmp_path, monkeypatch):
    target = tmp_path / "inboxd"
    out = init(str(target))
    assert f"wrote 37 file(s) into {target}: config.toml, rules/ (3), templates/ (33)" in out
    assert (target / "templates" / "de" / "ack.txt").read_text() == (SHIPPED / "templates" / "de" / "ack.txt").read_text()
    assert sorted(p.name for p in (target / "rules").iterdir()) == sorted(p.name for p in (SHIPPED / "rules").iterdir())
    checked = CliRunner().invoke(cli, ["--config", str(target / "config.toml"), "check"], env=PASSWORDS)
    assert checked.exit_code == 0 and checked.output.startswith(f"ok: {target / 'config.toml'}: 8 rule(s)"), \
        checked.output
    for name, value in PASSWORDS.items():
        monkeypatch.setenv(name, value)
    config = load_config(target / "config.toml")  # with the passwords read, as `run` reads them
    assert config.mailbox.password is not None and config.mailbox.password.value == "imap-secret"
    assert config.database_url == f"sqlite:///{target / 'inboxd.db'}"  # beside the config, not in the package
    assert config.rules_dir == target / "rules" and config.templates_dir == target / "templates"


def test_init_again_keeps_every_file_there_and_adds_what_is_missing(tmp_path):
    init(str(tmp_path))
    (tmp_path / "config.toml").write_text("# ours\n")
    (tmp_path / "templates" / "ack.txt").unlink()
    out = init(str(tmp_path))
    assert out.startswith(f"wrote 1 file(s) into {tmp_path}: templates/ (1)\nkept 36 file(s) already there, "
                          "unchanged: config.toml, rules/ (3), templates/ (32)\n"), out
    assert (tmp_path / "config.toml").read_text() == "# ours\n"
    assert (tmp_path / "templates" / "ack.txt").read_text() == (SHIPPED / "templates" / "ack.txt").read_text()
    (tmp_path / "rules" / "10-urgent.toml").write_text("version = 1\n")
    (tmp_path / "templates" / "ack.txt").unlink()
    assert "wrote 1 file(s)" in init(str(tmp_path))
    assert (tmp_path / "rules" / "10-urgent.toml").read_text() == "version = 1\n"


def test_init_into_a_place_it_cannot_write_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "file" / "inboxd")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.startswith(f"error: cannot write into {tmp_path / 'file' / 'inboxd'}: Not a directory")


def test_init_systemd_writes_the_unit_and_a_config_for_the_service(tmp_path, monkeypatch):
    out = init(str(tmp_path), "--systemd")
    assert "inboxd.service" in out and f"CREDENTIALS_DIRECTORY={tmp_path / 'credentials'} inboxd" in out
    assert stat.S_IMODE((tmp_path / "credentials").stat().st_mode) == 0o750  # root and the group inboxd
    (tmp_path / "credentials" / "imap-password").write_text("imap-secret\n")
    (tmp_path / "credentials" / "smtp-password").write_text("smtp-secret\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY, which systemd sets only inside the service"):
        load_config(tmp_path / "config.toml")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "credentials"))  # as systemd sets it
    config = load_config(tmp_path / "config.toml")
    assert config.mailbox.password is not None and config.mailbox.password.value == "imap-secret"
    assert config.smtp.password is not None and config.smtp.password.value == "smtp-secret"
    assert config.database_url == "sqlite:////var/lib/inboxd/inboxd.db"  # the unit's StateDirectory
    checked = CliRunner().invoke(cli, ["--config", str(tmp_path / "config.toml"), "check"])
    assert checked.exit_code == 0, checked.output


def test_init_systemd_over_a_plain_config_says_it_is_not_set_up_for_the_service(tmp_path):
    assert CliRunner().invoke(cli, ["init", str(tmp_path)]).exit_code == 0
    result = CliRunner().invoke(cli, ["init", str(tmp_path), "--systemd"])
    assert result.exit_code == 0 and (tmp_path / "inboxd.service").is_file()
    assert "config.toml was kept, and it is not set up for the service" in result.output
    fresh = CliRunner().invoke(cli, ["init", str(tmp_path / "fresh"), "--systemd"])
    assert "not set up for the service" not in fresh.output
    written = (tmp_path / "fresh" / "config.toml").read_text()
    assert 'state = "/var/lib/inboxd"' in written  # the health file where the service may write, PostgreSQL too
