"""OAuth2 for IMAP and SMTP: the config, the token source and the device flow as units; then XOAUTH2 and
OAUTHBEARER end to end on Dovecot's oauth2 passdb and an aiosmtpd XOAUTH2 server, with a local token and
introspection endpoint (`inboxd.servers.oauth.TokenServer`): tokens that expire or are revoked meanwhile."""

from __future__ import annotations

import stat
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from inboxd.cli import cli
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.errors import ConfigError
from inboxd.models import Item
from inboxd.oauth2 import HttpTokens, TokenError, browser_login, device_login
from inboxd.servers import DovecotServer, SmtpCapture, append_messages
from inboxd.servers.oauth import TokenServer
from inboxd.settings import OAuth2Config, Secret

from helpers import make_mail, write_config

SECRET = "Client-S3cret-5151"


def oauth2_config(tmp_path: Path, section: str, imap_port: int = 1143, smtp_port: int = 1025,
                  smtp: str = 'auth = "oauth2"\nuser = "inboxd"\n') -> Path:
    """The test config with `auth = "oauth2"` for IMAP (and by default SMTP) and this oauth2 section."""
    path = write_config(tmp_path, imap_port=imap_port, smtp_port=smtp_port)
    (tmp_path / "client-secret").write_text(SECRET)
    text = path.read_text().replace('password_file = "imap-password"', 'auth = "oauth2"')
    path.write_text(text.replace("[smtp]\n", f"[smtp]\n{smtp}") + f"\n[mailbox.oauth2]\n{section}\n")
    return path


def problems(tmp_path: Path, section: str) -> str:
    with pytest.raises(ConfigError) as error:
        load_config(oauth2_config(tmp_path, section))
    return str(error.value)


def line(tmp_path: Path, start: str) -> str:
    """`config.toml:N` for the first line of the test config that starts so."""
    lines = (tmp_path / "config.toml").read_text().splitlines()
    return f"config.toml:{next(n for n, text in enumerate(lines, 1) if text.startswith(start))}"


# --- the configuration ---------------------------------------------------------------------------

def test_microsoft_derives_the_token_url_and_scope_from_the_tenant_and_grant(tmp_path):
    config = load_config(oauth2_config(tmp_path, 'provider = "microsoft"\ntenant = "contoso.com"\n'
                                                 'client_id = "app-1"\nclient_secret_file = "client-secret"'))
    oauth2 = config.mailbox.oauth2
    assert oauth2 is not None and oauth2.client_secret == Secret(SECRET)
    assert oauth2.token_url == "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"
    assert oauth2.scope == "https://outlook.office365.com/.default" and oauth2.grant == "client_credentials"
    assert config.smtp.oauth2 is oauth2  # [smtp] auth = "oauth2" without a section of its own: one token for both
    delegated = load_config(oauth2_config(tmp_path, 'provider = "microsoft"\ntenant = "contoso.com"\n'
                                                    'client_id = "app-1"\ngrant = "refresh_token"\n'
                                                    'refresh_token_file = "secrets/refresh"')).mailbox.oauth2
    assert delegated is not None and delegated.refresh_token_file == tmp_path / "secrets/refresh"
    assert delegated.device_url == "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/devicecode"
    assert delegated.scope.split() == ["offline_access", "https://outlook.office365.com/IMAP.AccessAsUser.All",
                                       "https://outlook.office365.com/SMTP.Send"]


def test_google_derives_its_endpoints_and_takes_only_a_users_refresh_token(tmp_path):
    oauth2 = load_config(oauth2_config(tmp_path, 'provider = "google"\nclient_id = "app.apps.googleusercontent.com"'
                                                 '\nclient_secret_file = "client-secret"\ngrant = "refresh_token"\n'
                                                 'refresh_token_file = "refresh"')).mailbox.oauth2
    assert oauth2 is not None and oauth2.token_url == "https://oauth2.googleapis.com/token"
    assert oauth2.scope == "https://mail.google.com/" and oauth2.device_url is None  # it refuses mail scopes
    assert oauth2.authorize_url == "https://accounts.google.com/o/oauth2/v2/auth"  # `auth login` uses the browser
    said = problems(tmp_path, 'provider = "google"\nclient_id = "x"\nclient_secret_file = "client-secret"')
    where = line(tmp_path, "[mailbox.oauth2]")  # grant is not written: the section's header is named
    assert f"{where}: [mailbox.oauth2] grant: Google gives IMAP and SMTP access to a user's token only" in said


def test_oauth2_mistakes_are_named_with_file_and_line_and_the_secret_is_never_shown(tmp_path, monkeypatch):
    said = problems(tmp_path, f'provider = "generik"\nclient_id = "x"\nclient_secret_env = "{SECRET}"\n'
                              'grant = "refresh_token"\nmechanism = "plain"')
    assert f"{line(tmp_path, 'provider')}: [mailbox.oauth2] provider: must be one of microsoft, google, " \
           "generic (not 'generik')" in said
    assert f"{line(tmp_path, 'client_secret_env')}: [mailbox.oauth2] client_secret_env: names no environment " \
           "variable that is set" in said
    assert "[mailbox.oauth2] refresh_token_file: missing" in said
    assert "[mailbox.oauth2] mechanism: must be one of xoauth2, oauthbearer (not 'plain')" in said
    assert SECRET not in said and len(said.splitlines()) == 4  # nothing else: no password asked for instead
    said = problems(tmp_path, 'provider = "generic"\nclient_id = "x"\nclient_secret_file = "client-secret"\ntenat = 1')
    assert "[mailbox.oauth2] token_url: missing" in said and "tenat: unknown key (did you mean 'tenant'?)" in said
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('password_file = "imap-password"', 'auth = "oauth2"'))
    with pytest.raises(ConfigError, match=r"\[mailbox\] auth: \"oauth2\" needs a \[mailbox.oauth2\] section"):
        load_config(path)


# --- the token source, on a fake endpoint --------------------------------------------------------

class Endpoint:
    """Answers token requests as told, and keeps what it was sent."""

    def __init__(self, *answers: dict) -> None:
        self.answers, self.forms = list(answers), []

    def __call__(self, url: str, form: dict[str, str], timeout: float) -> dict:
        self.forms.append(form)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def generic(tmp_path: Path, grant: str = "client_credentials") -> OAuth2Config:
    return OAuth2Config(provider="generic", client_id="inboxd", token_url="https://id.example.org/token",
                        scope="mail", grant=grant, client_secret=Secret(SECRET),
                        refresh_token_file=tmp_path / "refresh")


def test_a_token_is_kept_until_shortly_before_it_expires_then_renewed(tmp_path):
    now = [1000.0]
    endpoint = Endpoint({"access_token": "one", "expires_in": 3600}, {"access_token": "two", "expires_in": 3600})
    tokens = HttpTokens(generic(tmp_path), post=endpoint, clock=lambda: now[0])
    assert tokens.token() == "one" and endpoint.forms[0] == {
        "client_id": "inboxd", "grant_type": "client_credentials", "scope": "mail", "client_secret": SECRET}
    now[0] += 3600 - 301
    assert tokens.token() == "one" and len(endpoint.forms) == 1  # cached
    now[0] += 2  # within five minutes of its end: renewed before any server sees it expire
    assert tokens.token() == "two" and len(endpoint.forms) == 2
    tokens.invalidate()  # the server refused it early (revoked): a new one at once
    assert tokens.token() == "two" and len(endpoint.forms) == 3


def test_a_refused_or_revoked_grant_is_one_clear_error(tmp_path):
    endpoint = Endpoint({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret.\n"
                                                                         "Trace ID: 1234"})
    with pytest.raises(TokenError) as error:
        HttpTokens(generic(tmp_path), post=endpoint).token()
    assert error.value.refused and str(error.value) == (
        "OAuth2: https://id.example.org/token refused the client id and secret "
        "(invalid_client: AADSTS7000215: Invalid client secret.)")
    with pytest.raises(TokenError, match=r"no refresh token in .*refresh .*: run `inboxd auth login`"):
        HttpTokens(generic(tmp_path, "refresh_token"), post=endpoint).token()
    (tmp_path / "refresh").write_text("revoked-one\n")
    with pytest.raises(TokenError, match=r"refused the refresh token: run `inboxd auth login` again \(invalid_grant"):
        HttpTokens(generic(tmp_path, "refresh_token"), post=Endpoint({"error": "invalid_grant"})).token()


def test_a_rotated_refresh_token_replaces_the_stored_one_readable_by_this_user_only(tmp_path):
    (tmp_path / "refresh").write_text("first\n")
    endpoint = Endpoint({"access_token": "a", "expires_in": 60, "refresh_token": "second"})
    assert HttpTokens(generic(tmp_path, "refresh_token"), post=endpoint).token() == "a"
    assert endpoint.forms[0]["refresh_token"] == "first" and endpoint.forms[0]["grant_type"] == "refresh_token"
    assert (tmp_path / "refresh").read_text() == "second\n"
    assert stat.S_IMODE((tmp_path / "refresh").stat().st_mode) == 0o600
    google = Endpoint({"access_token": "b", "expires_in": 60})  # Google keeps the same one: nothing to write
    assert HttpTokens(generic(tmp_path, "refresh_token"), post=google).token() == "b"
    assert (tmp_path / "refresh").read_text() == "second\n"


def test_a_rotated_refresh_token_that_cannot_be_stored_is_a_warning_not_a_failure(tmp_path, caplog):
    (tmp_path / "refresh").write_text("first\n")
    (tmp_path / ".refresh.new").mkdir()  # where it is written first cannot be written (as a read-only folder for
    endpoint = Endpoint({"access_token": "a", "expires_in": 60, "refresh_token": "second"})  # the service)
    assert HttpTokens(generic(tmp_path, "refresh_token"), post=endpoint).token() == "a"
    assert (tmp_path / "refresh").read_text() == "first\n"
    assert "the new refresh token could not be stored in" in caplog.text


def test_the_device_flow_shows_the_code_waits_and_stores_the_refresh_token(tmp_path):
    config = OAuth2Config(provider="generic", client_id="inboxd", token_url="https://id.example.org/token",
                          scope="mail offline_access", grant="refresh_token", device_url="https://id.example.org/dev",
                          refresh_token_file=tmp_path / "secrets" / "refresh")
    endpoint = Endpoint({"device_code": "d1", "user_code": "WXYZ", "verification_uri": "https://id/dev", "interval": 1},
                        {"error": "authorization_pending"}, {"error": "slow_down"},
                        {"access_token": "a", "refresh_token": "r1", "expires_in": 60})
    said, slept = [], []
    path = device_login(config, said.append, post=endpoint, sleep=slept.append)
    assert said == ["To sign in, open https://id/dev and enter the code WXYZ"] and slept == [1, 1, 6]
    assert endpoint.forms[1]["device_code"] == "d1" and path.read_text() == "r1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(TokenError, match=r"refused the sign-in \(access_denied"):
        device_login(config, said.append, post=Endpoint({"device_code": "d"}, {"error": "access_denied"}),
                     sleep=slept.append)


# --- end to end: Dovecot's oauth2 passdb, aiosmtpd XOAUTH2 ---------------------------------------

@pytest.fixture(scope="module")
def tokens():
    with TokenServer("inboxd", client_secret=SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def dovecot(tokens):
    with DovecotServer(introspection_url=f"{tokens.url}/introspect") as server:
        yield server


@pytest.fixture
def smtp(tokens):
    with SmtpCapture(tokens=tokens) as capture:  # takes mail only after AUTH XOAUTH2 with a live token
        yield capture


def wait_until(check, what: str, timeout: float = 30, alive: threading.Thread | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert alive is None or alive.is_alive(), f"the daemon stopped before {what}"
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout} s")
        time.sleep(0.05)


class Running:
    """`inboxd run` in a thread, logging in with tokens from the local endpoint."""

    def __init__(self, tmp_path: Path, dovecot: DovecotServer, smtp: SmtpCapture, tokens: TokenServer,
                 mechanism: str = "xoauth2", grant: str = "client_credentials") -> None:
        dovecot.reset()
        self.config = load_config(oauth2_config(
            tmp_path, f'provider = "generic"\nclient_id = "inboxd"\nclient_secret_file = "client-secret"\n'
                      f'token_url = "{tokens.url}/token"\nmechanism = "{mechanism}"\ngrant = "{grant}"\n'
                      f'refresh_token_file = "refresh"', dovecot.port, smtp.port))
        self.daemon = Daemon(self.config)
        self.dovecot, self.smtp = dovecot, smtp
        self.thread = threading.Thread(target=self.daemon.run, name="daemon", daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop()
        self.thread.join(30)

    def request(self, subject: str, count: int) -> None:
        """Deliver a request; wait until it is an item and the SMTP server took `count` acknowledgements."""
        append_messages(self.dovecot, [make_mail("rosa@example.org", subject, f"{subject}: please help.")])
        wait_until(lambda: Item.select().where(Item.subject == subject).exists(), f"{subject!r} tracked",
                   alive=self.thread)
        wait_until(lambda: len(self.acks()) >= count, f"{count} acknowledgement(s) sent", alive=self.thread)

    def acks(self) -> list:
        return [m for m in self.smtp.messages if m.rcpt_tos == ("rosa@example.org",)]


@pytest.mark.server
@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_a_token_that_expires_while_the_daemon_idles_is_renewed_and_no_mail_is_lost(
        tmp_path, dovecot, smtp, tokens, mechanism):
    tokens.lifetime = 2.0  # renewed a second before its end; Dovecot asks the endpoint, which refuses it after
    issued = len(tokens.issued)
    with Running(tmp_path, dovecot, smtp, tokens, mechanism) as room:
        room.request("Printer jammed", 1)  # the acknowledgement went out over an XOAUTH2 session
        time.sleep(2.5)  # the token expires while the daemon idles on its logged-in connections
        assert dovecot.cut_connections() >= 1  # they drop: the next logins need a token again
        smtp.stop()
        with SmtpCapture(port=smtp.port, tokens=tokens) as restarted:
            room.smtp = restarted
            room.request("Monitor flickers", 1)
        assert not room.daemon.refused
    assert len(tokens.issued) - issued >= 2 and not tokens.refused  # renewed before anyone saw it expire
    assert smtp.refused == restarted.refused == 0
    assert Item.select().count() == 2


@pytest.mark.server
def test_a_token_revoked_early_is_refused_once_replaced_and_the_daemon_goes_on(tmp_path, dovecot, smtp, tokens):
    tokens.lifetime = 3600.0
    tokens.refused.clear()
    with Running(tmp_path, dovecot, smtp, tokens) as room:
        room.request("Printer jammed", 1)
        tokens.expire_all()  # revoked: the daemon's cached token still looks good to it
        dovecot.cut_connections()
        room.request("Monitor flickers", 2)
        assert not room.daemon.refused and not room.daemon.stopping.is_set()
    assert len(tokens.refused) == 1  # Dovecot refused the revoked token once; a new one was fetched at once
    assert Item.select().count() == 2


@pytest.mark.server
def test_auth_login_stores_a_refresh_token_that_check_connect_and_run_then_use(tmp_path, dovecot, smtp, tokens):
    tokens.lifetime = 3600.0
    room = Running(tmp_path, dovecot, smtp, tokens, grant="refresh_token")
    path = room.config.path
    path.write_text(path.read_text() + f'device_url = "{tokens.url}/device"\n')
    refused = CliRunner().invoke(cli, ["--config", str(path), "check"])
    assert refused.exit_code == 1 and "refresh_token_file: OAuth2: no refresh token in" in refused.output
    signed_in = CliRunner().invoke(cli, ["--config", str(path), "auth", "login"])
    assert signed_in.exit_code == 0, signed_in.output
    assert f"open {tokens.url}/activate and enter the code ABCD-EFGH" in signed_in.output
    assert (tmp_path / "refresh").read_text() == tokens.refresh_token + "\n"
    assert stat.S_IMODE((tmp_path / "refresh").stat().st_mode) == 0o600
    checked = CliRunner().invoke(cli, ["--config", str(path), "check", "--connect"])
    assert checked.exit_code == 0, checked.output
    assert "IMAP ok: logged in as 'inboxd'" in checked.output and "(none, OAuth2, XOAUTH2)" in checked.output
    assert "SMTP ok: logged in as 'inboxd'" in checked.output
    (tmp_path / "refresh").write_text("revoked\n")
    revoked = CliRunner().invoke(cli, ["--config", str(path), "check", "--connect"])
    assert revoked.exit_code == 1 and "Traceback" not in revoked.output
    assert "IMAP failed: IMAP: no login: OAuth2: " in revoked.output
    assert "refused the refresh token: run `inboxd auth login` again (invalid_grant: the refresh token was " \
           "revoked)" in revoked.output and "SMTP failed: SMTP: no login: OAuth2:" in revoked.output
    assert SECRET not in checked.output + revoked.output


@pytest.mark.server
def test_the_browser_sign_in_with_pkce_stores_the_refresh_token(tmp_path, tokens):
    config = OAuth2Config(provider="google", client_id="inboxd", token_url=f"{tokens.url}/token", scope="mail",
                          grant="refresh_token", client_secret=Secret(SECRET), refresh_token_file=tmp_path / "refresh",
                          authorize_url="https://accounts.example.org/auth")
    said: list[str] = []
    signing_in = threading.Thread(target=lambda: said.append(str(browser_login(config, said.append, patience=30))))
    signing_in.start()
    wait_until(lambda: said, "the address shown")
    address = next(line for line in said[0].splitlines() if line.startswith(config.authorize_url))
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(address).query))
    assert query["code_challenge_method"] == "S256" and query["access_type"] == "offline"
    tokens.codes["code-1"] = query["code_challenge"]  # the person signed in: the provider sends the browser back
    stranger = urllib.request.urlopen(f"{query['redirect_uri']}?code=forged&state=guessed", timeout=10).read()
    assert stranger == b"inboxd: waiting for the sign-in."  # another state is not our answer
    back = f"{query['redirect_uri']}?code=code-1&state={urllib.parse.quote(query['state'])}"
    assert urllib.request.urlopen(back, timeout=10).read() == b"inboxd: done, you can close this page."
    signing_in.join(30)
    assert said[-1] == str(tmp_path / "refresh") and (tmp_path / "refresh").read_text() == tokens.refresh_token + "\n"
    assert "code-1" not in tokens.codes  # exchanged, with the verifier that matches the challenge
