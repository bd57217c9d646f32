"""Several teams in one deployment: each file of `teams.d/` is a team, written over the shared config.toml."""

from __future__ import annotations

from pathlib import Path

import pytest
from inboxd.config import load_config, load_teams
from inboxd.errors import ConfigError
from inboxd.localconfig import SHIPPED

from helpers import write_config

FACILITIES = """\
[team]
name = "Facilities"
address = "facilities@example.org"
ref_prefix = "FAC"
members = [{ email = "cem@example.org", name = "Cem" }]

[queues]
default = ["cem@example.org"]

[mailbox]
user = "facilities"

[calendar]
timezone = "America/New_York"

[paths]
templates = "facilities-templates"
"""

HR = """\
[team]
name = "HR"
address = "hr@example.org"
ref_prefix = "HR"
members = [{ email = "dana@example.org", name = "Dana" }, { email = "ana@example.org", name = "Ana" }]

[queues]
default = ["dana@example.org", "ana@example.org"]

[mailbox]
user = "hr"
"""


def deployment(tmp_path: Path, **teams: str) -> Path:
    """The tests' shared config.toml (its alias left out: it is no team's) with `teams.d/NAME.toml` for each team."""
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('address = "help@example.org"\n', ""))
    (tmp_path / "teams.d").mkdir()
    for name, text in teams.items():
        (tmp_path / "teams.d" / f"{name}.toml").write_text(text)
    return config


def test_without_a_teams_folder_the_config_is_the_one_team(tmp_path):
    (team,) = load_teams(write_config(tmp_path))
    assert team.team.ref_prefix == "IT" and team.team_file is None


def test_each_team_file_is_a_team_over_the_shared_config(tmp_path):
    facilities, hr = load_teams(deployment(tmp_path, facilities=FACILITIES, hr=HR))
    assert [t.team.ref_prefix for t in (facilities, hr)] == ["FAC", "HR"]
    assert facilities.team_file == tmp_path / "teams.d" / "facilities.toml"
    # The team's own keys win, key by key; what it does not write is the shared config's.
    assert (facilities.mailbox.user, facilities.mailbox.host, facilities.mailbox.done_folder) == \
        ("facilities", "127.0.0.1", "Processed")
    assert str(facilities.calendar.tz) == "America/New_York" and str(hr.calendar.tz) == "Europe/Berlin"
    assert facilities.team.lead == hr.team.lead == "lead@example.org"  # [team] lead from the shared file
    assert facilities.smtp == hr.smtp and facilities.database_url == hr.database_url
    # A team's [queues] is its own whole: the shared ops queue names members it does not have.
    assert facilities.queues == {"default": ("cem@example.org",)}
    # A relative path is relative to the file that wrote it.
    assert facilities.templates_dir == tmp_path / "teams.d" / "facilities-templates"
    assert hr.templates_dir == (SHIPPED / "templates").resolve()  # the shared file's
    assert hr.mailbox.password is not None  # password_file of the shared file, relative to it


def test_load_config_gives_the_first_team(tmp_path):
    assert load_config(deployment(tmp_path, hr=HR, facilities=FACILITIES)).team.ref_prefix == "FAC"


def test_a_mistake_in_a_team_file_names_that_file_and_line(tmp_path):
    config = deployment(tmp_path, hr=HR.replace('user = "hr"', 'usr = "hr"'))
    with pytest.raises(ConfigError) as caught:
        load_teams(config)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{tmp_path / 'teams.d' / 'hr.toml'}:11: [mailbox] usr: unknown key")
    assert "did you mean 'user'" in problem


def test_a_missing_key_is_said_in_the_team_file(tmp_path):
    config = deployment(tmp_path, hr=HR.replace('address = "hr@example.org"\n', ""))
    with pytest.raises(ConfigError) as caught:
        load_teams(config)
    assert caught.value.problems == [f"{tmp_path / 'teams.d' / 'hr.toml'}:1: [team] address: missing (required)"]


def test_what_the_deployment_shares_cannot_be_set_by_a_team(tmp_path):
    config = deployment(tmp_path, hr=HR + '\n[database]\nurl = "sqlite:///hr.db"\n\n[log]\nformat = "json"\n')
    with pytest.raises(ConfigError) as caught:
        load_teams(config)
    hr = tmp_path / "teams.d" / "hr.toml"
    assert caught.value.problems == [
        f"{hr}:13: [database]: shared by all teams: set it in config.toml, not in a team's file",
        f"{hr}:16: [log]: shared by all teams: set it in config.toml, not in a team's file"]


@pytest.mark.parametrize(("key", "value", "said"), [
    ("ref_prefix", '"FAC"', "[team] ref_prefix: 'FAC' is already facilities.toml's"),
    ("address", '"facilities@example.org"', "[team] address: 'facilities@example.org' is already facilities.toml's"),
])
def test_two_teams_cannot_share_a_prefix_or_an_alias(tmp_path, key, value, said):
    line = next(line for line in HR.splitlines() if line.startswith(f"{key} ="))
    config = deployment(tmp_path, facilities=FACILITIES, hr=HR.replace(line, f"{key} = {value}"))
    with pytest.raises(ConfigError) as caught:
        load_teams(config)
    assert caught.value.problems == [f"{tmp_path / 'teams.d' / 'hr.toml'}: {said}: each team needs its own"]


def test_two_teams_cannot_watch_one_mailbox(tmp_path):
    config = deployment(tmp_path, facilities=FACILITIES, hr=HR.replace('user = "hr"', 'user = "facilities"'))
    with pytest.raises(ConfigError) as caught:
        load_teams(config)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{tmp_path / 'teams.d' / 'hr.toml'}: [mailbox] user: 'facilities@127.0.0.1:")
    assert problem.endswith("is already facilities.toml's: each team needs its own")


def test_every_team_file_is_checked_at_once(tmp_path):
    config = deployment(tmp_path, facilities=FACILITIES.replace('ref_prefix = "FAC"', 'ref_prefix = "f a c"'),
                        hr=HR.replace('[mailbox]', '[mailbox]\nport = "x"'))
    with pytest.raises(ConfigError) as caught:
        load_teams(config)
    files = [problem.split(":")[0] for problem in caught.value.problems]
    assert files == [str(tmp_path / "teams.d" / "facilities.toml"), str(tmp_path / "teams.d" / "hr.toml")]


def test_a_one_team_config_given_team_files_must_give_its_own_team_a_file_too(tmp_path):
    """Adding teams.d/hr.toml beside help@'s config.toml must not stop watching help@ without a word."""
    config = write_config(tmp_path)
    (tmp_path / "teams.d").mkdir()
    (tmp_path / "teams.d" / "hr.toml").write_text(HR)
    with pytest.raises(ConfigError) as caught:
        load_teams(config)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{config}:3: [team] address: 'help@example.org' is no team's: with team files in ")
    (tmp_path / "teams.d" / "it.toml").write_text('[mailbox]\nuser = "inboxd"\n')  # help@'s own file: all of it shared
    assert [t.team.ref_prefix for t in load_teams(config)] == ["HR", "IT"]


def test_a_team_file_with_a_bom_or_crlf_is_read_as_any_other(tmp_path):
    """Windows editors write a BOM and CRLF: the team is read, not refused as invalid TOML at line 1, column 1."""
    config = deployment(tmp_path, facilities=FACILITIES, hr=HR)
    hr = tmp_path / "teams.d" / "hr.toml"
    hr.write_bytes(b"\xef\xbb\xbf" + hr.read_bytes().replace(b"\n", b"\r\n"))
    assert [c.team.ref_prefix for c in load_teams(config)] == ["FAC", "HR"]


def test_a_team_file_ending_in_upper_case_is_a_team_and_an_editors_dot_file_is_none(tmp_path):
    """HR.TOML from another system is not left unwatched without a word; Emacs's lock .#hr.toml breaks nothing."""
    config = deployment(tmp_path, facilities=FACILITIES)
    (tmp_path / "teams.d" / "HR.TOML").write_text(HR)
    (tmp_path / "teams.d" / ".#hr.toml").symlink_to("root@host.1234:1700000000")  # dangling, as Emacs leaves it
    assert sorted(c.team.ref_prefix for c in load_teams(config)) == ["FAC", "HR"]


def test_an_empty_teams_folder_is_said_beside_what_the_shared_config_lacks(tmp_path):
    """The teams' files moved away: the shared config.toml, no team of its own, is not left to puzzle over."""
    config = deployment(tmp_path)
    (tmp_path / "teams.d" / "hr.toml.off").write_text(HR)
    with pytest.raises(ConfigError) as caught:
        load_teams(config)
    assert caught.value.problems == [f"{config}:1: [team] address: missing (required)",
                                     f"{tmp_path / 'teams.d'}/: holds no team file (NAME.toml), so config.toml alone "
                                     f"is read as the one team"]
