"""`inboxd init DIR`: an admin's own copy of the shipped config, rules and templates (and a systemd unit)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from .errors import InboxdError
from .localconfig import SHIPPED

CREDENTIALS = "credentials"  # DIR/credentials/: the password files LoadCredential= hands to the service
STATE = "/var/lib/inboxd"  # the unit's StateDirectory=

# The example config, as the service needs it: the database where the service may write, passwords from
# systemd's credentials. Each pattern must match exactly once (a test keeps config.example.toml in step).
FOR_SYSTEMD = [
    (r'^url = "sqlite:///inboxd\.db".*$',
     f'url = "sqlite:///{STATE}/inboxd.db"   # StateDirectory= of inboxd.service; or postgresql://user@host/inboxd'),
    (r'^password_env = "INBOXD_IMAP_PASSWORD".*$',
     'password_file = "$CREDENTIALS_DIRECTORY/imap-password"   # LoadCredential= in inboxd.service'),
    (r'^password_env = "INBOXD_SMTP_PASSWORD".*$',
     'password_file = "$CREDENTIALS_DIRECTORY/smtp-password"   # LoadCredential= in inboxd.service'),
    (r'^# state = "/var/lib/inboxd" .*$',  # the config's own folder is read-only to the service
     f'state = "{STATE}"                # the health file: writable by the service, also with PostgreSQL'),
]


CREDENTIALS_VARIABLE = "$CREDENTIALS_DIRECTORY"  # how a config for the service names its secrets


def starter_config(systemd: bool) -> str:
    """config.example.toml as a config.toml to edit; with `systemd`, set up for inboxd.service."""
    text = (SHIPPED / "config.example.toml").read_text(encoding="utf-8")
    text = text.replace("# inboxd configuration. Copy to config.toml and adjust;",
                        "# inboxd configuration, written by `inboxd init`. Adjust it;", 1)
    for pattern, replacement in FOR_SYSTEMD if systemd else []:
        text, found = re.subn(pattern, replacement, text, count=1, flags=re.M)
        if found != 1:
            raise RuntimeError(f"config.example.toml has no line matching {pattern!r}")
    return text


def unit(directory: Path, python: str) -> str:
    """inboxd.service for a config in `directory`, run by this Python (the one inboxd is installed in)."""
    text = (SHIPPED / "inboxd.service").read_text(encoding="utf-8")
    return text.format(python=python, config=directory / "config.toml", credentials=directory / CREDENTIALS,
                       unit=directory / "inboxd.service")


def starter_files(directory: Path, systemd: bool, python: str) -> dict[Path, str]:
    """Every file `init` writes, by path relative to `directory`, with its text."""
    files = {Path("config.toml"): starter_config(systemd)}
    for folder in ("rules", "templates"):  # and the language sets in templates/
        for path in sorted((SHIPPED / folder).rglob("*")):
            if path.is_file():
                files[Path(folder, path.relative_to(SHIPPED / folder))] = path.read_text(encoding="utf-8")
    if systemd:
        files[Path("inboxd.service")] = unit(directory, python)
    return files


def write_new(directory: Path, files: dict[Path, str]) -> tuple[list[Path], list[Path]]:
    """Write each file that is not there yet; (written, kept as they were)."""
    written, kept = [], []
    for relative, text in files.items():
        target = directory / relative
        if target.exists() or target.is_symlink():
            kept.append(relative)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("x", encoding="utf-8") as out:  # "x": never overwrite, not even a file made just now
            out.write(text)
        written.append(relative)
    return written, kept


def _listing(paths: list[Path]) -> str:
    """`config.toml, rules/ (3), templates/ (23)`: top-level files by name, folders by count."""
    counts: dict[str, int] = {}
    for path in paths:
        name = f"{path.parts[0]}/" if len(path.parts) > 1 else path.name
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(name if not name.endswith("/") else f"{name} ({n})" for name, n in counts.items())


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--systemd", is_flag=True,
              help=f"also write inboxd.service, with a config for it (database in {STATE}, passwords "
                   f"through LoadCredential= from DIRECTORY/{CREDENTIALS}/)")
def command(directory: Path, systemd: bool) -> None:
    """Write a starter config.toml, rules/ and templates/ into DIRECTORY; files already there are kept."""
    directory = directory.absolute()
    try:
        written, kept = write_new(directory, starter_files(directory, systemd, sys.executable))
    except OSError as exc:  # not writable, a full disk: what was written stays, and a second run adds the rest
        raise InboxdError(f"cannot write into {directory}: {exc.strerror or exc}") from None
    if written:
        click.echo(f"wrote {len(written)} file(s) into {directory}: {_listing(written)}")
    if kept:
        names = ", ".join(map(str, kept)) if len(kept) <= 10 else _listing(kept)
        click.echo(f"kept {len(kept)} file(s) already there, unchanged: {names}")
    config = directory / "config.toml"
    click.echo(f"next:\n  1. edit {config}: [team], [queues], [mailbox] and [smtp] (each key is explained there),\n"
               f"     and the rules in {directory / 'rules'}")
    if not systemd:
        click.echo("  2. export INBOXD_IMAP_PASSWORD=... INBOXD_SMTP_PASSWORD=... (the variables config.toml names)\n"
                   f"  3. inboxd --config {config} check")
        return
    if Path("config.toml") in kept and CREDENTIALS_VARIABLE not in config.read_text(encoding="utf-8"):
        click.secho(f"WARNING: {config} was kept, and it is not set up for the service (passwords from "
                    f"{CREDENTIALS_VARIABLE}, the database in {STATE}): init into a new folder, or move it aside "
                    f"and run this again", err=True, fg="red")
    secrets = directory / CREDENTIALS
    secrets.mkdir(mode=0o750, exist_ok=True)
    click.echo(f"  2. useradd --system --home-dir {STATE} --shell /usr/sbin/nologin inboxd\n"
               f"     install -d -o inboxd -g inboxd -m 700 {STATE}\n"
               f"  3. put the passwords into {secrets}/imap-password and smtp-password, then\n"
               f"     chgrp -R inboxd {secrets} && chmod 0640 {secrets}/*\n"
               f"  4. runuser -u inboxd -- env CREDENTIALS_DIRECTORY={secrets} inboxd --config {config} check\n"
               f"  5. cp {directory / 'inboxd.service'} /etc/systemd/system/ && systemctl daemon-reload "
               f"&& systemctl enable --now inboxd")
    if Path(sys.executable).is_relative_to("/home") or Path(sys.executable).is_relative_to("/root"):
        click.secho(f"WARNING: the unit runs {sys.executable}, which its ProtectHome=yes hides from the service: "
                    f"install inboxd outside /home and /root (README, \"Deploy\")", err=True, fg="red")
