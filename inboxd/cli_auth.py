"""The commands that try the credentials: `check --connect` and `auth login`."""

from __future__ import annotations

import click

from .config import Config
from .errors import InboxdError


def report_connections(config: Config) -> bool:
    """Log in to IMAP and SMTP, send nothing, and say ok or failed for each; True if both worked."""
    from .oauth2 import token_sources
    from .outbox import SmtpTransport
    from .source import ImapSource
    worked = True
    imap_tokens, smtp_tokens = token_sources(config.mailbox.oauth2, config.smtp.oauth2)
    for server, attempt in (("IMAP", ImapSource(config.mailbox, tokens=imap_tokens).check),
                            ("SMTP", SmtpTransport(config.smtp, smtp_tokens).check)):
        try:
            click.echo(f"{server} ok: {attempt()}")
        except InboxdError as exc:  # messages name the server and the user, never a secret
            click.echo(f"{server} failed: {exc}")
            worked = False
    return worked


@click.group()
def auth() -> None:
    """OAuth2 sign-in for a delegated mailbox."""


@auth.command("login")
@click.option("--smtp", "for_smtp", is_flag=True, help="sign in for [smtp.oauth2] rather than [mailbox.oauth2]")
@click.option("--browser", is_flag=True, help="sign in through a browser sent back to this machine, not with a "
                                              "code (the only way with Google)")
@click.option("--port", type=int, default=0, help="with --browser: the local port the browser is sent back to")
@click.pass_context
def login(ctx: click.Context, for_smtp: bool, browser: bool, port: int) -> None:
    """Sign in for a delegated mailbox and keep the refresh token in refresh_token_file (mode 0600)."""
    from .cli import _config
    from .oauth2 import browser_login, device_login
    config = _config(ctx)
    section = "[smtp.oauth2]" if for_smtp else "[mailbox.oauth2]"
    oauth2 = config.smtp.oauth2 if for_smtp else config.mailbox.oauth2
    if oauth2 is None or oauth2.grant != "refresh_token":
        raise InboxdError(f"{config.path}: `auth login` needs {section} with grant = \"refresh_token\" "
                          f"(a client_credentials grant signs in by itself)")
    if browser or not oauth2.device_url:
        path = browser_login(oauth2, click.echo, port)
    else:
        path = device_login(oauth2, click.echo)
    click.echo(f"signed in: the refresh token is in {path} (readable by this user only); "
               f"`inboxd check --connect` tries it")
