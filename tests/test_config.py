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
    assert "[mailbox] password_env: names no environment variable that is set" in problems


def test_bad_duration_timezone_and_toml_syntax(tmp_path):
    error = _broken(tmp_path, 'timezone = "Europe/Berlin"', 'timezone = "Mars/Olympus"\n[service]\ndefault_due = "soon"')
    problems = "\n".join(error.problems)
    assert "unknown timezone 'Mars/Olympus'" in problems
    assert "[service] default_due: not a duration: 'soon'" in problems
    error = _broken(tmp_path, "[smtp]", "[smtp")
    assert "invalid TOML" in str(error) and ":23:" in str(error)


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


# --- the password written where its variable's or file's name belongs --------------------------

PASSWORD = "Hunter2-S3cret!"  # what an admin typed where a name belongs


def _written(tmp_path: Path, table: str, line: str, secrets: bool = True) -> str:
    """The problems of a config whose [mailbox] or [smtp] has `line`, all of them as one text."""
    path = write_config(tmp_path)
    text = path.read_text()
    if table == "mailbox":
        text = text.replace('password_file = "imap-password"', line)
    else:
        text = text.replace("[smtp]\n", f'[smtp]\nuser = "help"\n{line}\n')
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, secrets=secrets)
    return "\n".join(caught.value.problems)


@pytest.mark.parametrize("table, variable", [("mailbox", "INBOXD_IMAP_PASSWORD"), ("smtp", "INBOXD_SMTP_PASSWORD")])
def test_a_password_given_as_password_env_is_explained_not_echoed(tmp_path, monkeypatch, table, variable):
    monkeypatch.delenv(PASSWORD, raising=False)
    problems = _written(tmp_path, table, f'password_env = "{PASSWORD}"')
    assert f"[{table}] password_env: names no environment variable that is set: export it where inboxd runs; it " \
           f"should be a variable's name such as {variable}, not the password" in problems
    assert PASSWORD not in problems and "Hunter2" not in problems
    # `inboxd check` reads no secrets, but a value no variable could be named is still caught.
    problems = _written(tmp_path, table, f'password_env = "{PASSWORD}"', secrets=False)
    assert "names no environment variable that is set" in problems and PASSWORD not in problems


def test_the_example_configs_own_variable_unset_is_named_and_nothing_else_is_said(tmp_path, monkeypatch):
    monkeypatch.delenv("INBOXD_SMTP_PASSWORD", raising=False)
    problems = _written(tmp_path, "smtp", 'password_env = "INBOXD_SMTP_PASSWORD"')
    assert "[smtp] password_env: INBOXD_SMTP_PASSWORD is not set: export it where inboxd runs" in problems
    assert "a user needs password_env or password_file" not in problems


def test_an_unset_variable_is_named_nowhere_and_check_does_not_need_it(tmp_path, monkeypatch):
    monkeypatch.delenv("Hunter2S3cret", raising=False)  # a password that happens to look like a name
    problems = _written(tmp_path, "mailbox", 'password_env = "Hunter2S3cret"')
    assert "names no environment variable that is set" in problems and "Hunter2S3cret" not in problems
    path = tmp_path / "config.toml"
    assert load_config(path, secrets=False).mailbox.password is None  # check: no secrets read, no error


@pytest.mark.parametrize("table", ["mailbox", "smtp"])
def test_a_password_given_as_password_file_is_explained_not_echoed(tmp_path, table):
    problems = _written(tmp_path, table, f'password_file = "{PASSWORD}"')
    assert f"[{table}] password_file: names no file that can be read (No such file or directory): it should be " \
           f"the path of a file holding the password, relative to {tmp_path}, not the password" in problems
    assert PASSWORD not in problems and "Hunter2" not in problems


@pytest.mark.parametrize("content, why", [(b"", "the file it names is empty"),
                                          (b" \n\t\n", "the file it names is empty"),
                                          (b"\xff\xfe" + PASSWORD.encode("utf-16-le"), "not UTF-8 text")])
def test_an_empty_or_unreadable_password_file_says_so(tmp_path, content, why):
    (tmp_path / "secret-file").mkdir(exist_ok=True)
    (tmp_path / "secret-file" / "pw").write_bytes(content)
    problems = _written(tmp_path, "mailbox", 'password_file = "secret-file/pw"')
    assert f"[mailbox] password_file: {why}" in problems or f"({why})" in problems
    assert PASSWORD not in problems and "secret-file" not in problems


def test_a_directory_or_a_nul_in_password_file_says_so(tmp_path):
    problems = _written(tmp_path, "mailbox", 'password_file = "."')
    assert "names no file that can be read (Is a directory)" in problems
    problems = _written(tmp_path, "mailbox", f'password_file = "{PASSWORD}\\u0000"')
    assert "names no file that can be read (not a usable path)" in problems and PASSWORD not in problems


def test_an_empty_variable_and_a_number_say_so_without_the_value(tmp_path, monkeypatch):
    monkeypatch.setenv("INBOXD_EMPTY_PASSWORD", "")
    problems = _written(tmp_path, "smtp", 'password_env = "INBOXD_EMPTY_PASSWORD"')
    assert "[smtp] password_env: the environment variable it names is set but empty" in problems
    problems = _written(tmp_path, "mailbox", "password_env = 73317331")
    assert "[mailbox] password_env: expected a string (the value is not shown" in problems and "7331" not in problems
    problems = _written(tmp_path, "mailbox", "password_file = 73317331", secrets=False)
    assert "[mailbox] password_file: expected a string" in problems and "7331" not in problems


def test_cli_errors_and_check_never_show_the_password(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from inboxd.cli import cli
    monkeypatch.delenv(PASSWORD, raising=False)
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('password_file = "imap-password"', f'password_env = "{PASSWORD}"')
                    .replace("[smtp]\n", f'[smtp]\nuser = "help"\npassword_file = "{PASSWORD}"\n'))
    for command in ("check", "once", "items"):
        result = CliRunner().invoke(cli, ["--config", str(path), command])
        assert PASSWORD not in result.output, (command, result.output)
        if command == "once":  # it reads the secrets: both mistakes named, exit 1, no traceback
            assert result.exit_code == 1 and "Traceback" not in result.output
            assert "[mailbox] password_env: names no environment variable" in result.output
            assert "[smtp] password_file: names no file that can be read" in result.output


@pytest.mark.parametrize("window, why", [("0m", "too short to catch a loop"), ("5m", "too short to catch a loop"),
                                         ("1 business hour", "wall-clock time")])
def test_a_caps_window_that_would_switch_the_caps_off_is_refused(tmp_path, window, why):
    error = _broken(tmp_path, 'timezone = "Europe/Berlin"',
                    f'timezone = "Europe/Berlin"\n[limits]\nautomatic_window = "{window}"')
    assert why in "\n".join(error.problems)


def test_a_misspelt_section_is_named_at_its_line(tmp_path):
    error = _broken(tmp_path, "[calendar]", "[calender]")
    (problem,) = [p for p in error.problems if "calender" in p]
    line = next(n for n, text in enumerate((tmp_path / "config.toml").read_text().splitlines(), 1)
                if text.startswith("[calender]"))
    assert problem.endswith(f"config.toml:{line}: [calender]: unknown section (did you mean 'calendar'?)")


def test_a_toml_error_at_the_end_of_the_file_names_its_last_line(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text() + "broken =\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"config.toml:{len(path.read_text().splitlines())}: invalid TOML" in str(caught.value)
