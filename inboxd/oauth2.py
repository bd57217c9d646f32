"""OAuth2 access tokens for IMAP and SMTP: fetched from a token endpoint, cached, refreshed before expiry.

All three providers speak plain OAuth2 (RFC 6749, and RFC 8628 for the device flow) to their token
endpoints, so one small HTTP client serves them all and the tests exercise the very code that talks
to Microsoft or Google. The named providers only differ in their endpoints and scopes, which
`config.named_endpoints` derives.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Protocol

from .errors import InboxdError
from .settings import OAuth2Config

log = logging.getLogger(__name__)

EARLY_SECONDS = 300  # a token is renewed this long before it expires (or halfway, for a short-lived one)
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class TokenError(InboxdError):
    """No access token: `refused` when the endpoint said no (the credentials are wrong, expired or revoked)."""

    def __init__(self, message: str, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused


class TokenSource(Protocol):
    """Hands out a valid access token."""

    def token(self) -> str:
        """A token that is valid for a while yet; raises TokenError."""
        ...

    def invalidate(self) -> None:
        """The server refused the last token: fetch a new one next time."""
        ...


Post = Callable[[str, dict[str, str], float], dict[str, Any]]


def post_form(url: str, form: dict[str, str], timeout: float) -> dict[str, Any]:
    """POST a form to an OAuth2 endpoint; its JSON answer, or TokenError saying what it refused."""
    request = urllib.request.Request(url, urllib.parse.urlencode(form).encode(), method="POST",
                                     headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (the configured URL)
            body = json.loads(answer.read())
        if not isinstance(body, dict):
            raise TokenError(f"OAuth2: {url} answered with something else than a JSON object", refused=False)
        return body
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            body = {}
        if not isinstance(body, dict) or "error" not in body:
            raise TokenError(f"OAuth2: {url} answered HTTP {exc.code}", refused=exc.code in (400, 401, 403)) from None
        return body  # an OAuth2 error: the caller says what it means
    except (OSError, ValueError, http.client.HTTPException) as exc:  # HTTPException: a broken or cut answer
        raise TokenError(f"OAuth2: cannot reach {url}: {getattr(exc, 'reason', exc)}", refused=False) from None


def refused(answer: dict[str, Any], url: str, what: str) -> TokenError:
    """The endpoint's error, in one line: its code and the first line of its description."""
    description = str(answer.get("error_description") or "").strip().splitlines()
    detail = f": {description[0][:200]}" if description else ""
    return TokenError(f"OAuth2: {url} refused {what} ({answer.get('error')}{detail})", refused=True)


@dataclass
class HttpTokens:
    """Tokens from the configured endpoint, kept in memory and renewed shortly before they expire."""

    config: OAuth2Config
    post: Post = post_form
    clock: Callable[[], float] = time.monotonic
    timeout: float = 30.0
    _token: str = ""
    _renew_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def token(self) -> str:
        with self._lock:  # the IMAP loop and the outbox's connections share one token
            if not self._token or self.clock() >= self._renew_at:
                self._fetch()
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = ""

    def _fetch(self) -> None:
        cfg = self.config
        form = {"client_id": cfg.client_id, "grant_type": cfg.grant}
        if cfg.scope:
            form["scope"] = cfg.scope
        if cfg.client_secret:
            form["client_secret"] = cfg.client_secret.value
        if cfg.grant == "refresh_token":
            form["refresh_token"] = read_refresh_token(cfg)
        what = "the refresh token: run `inboxd auth login` again" if cfg.grant == "refresh_token" \
            else "the client id and secret"
        started = self.clock()
        answer = self.post(cfg.token_url, form, self.timeout)
        if "error" in answer or not answer.get("access_token"):
            raise refused(answer, cfg.token_url, what)
        try:
            lifetime = max(1.0, float(answer.get("expires_in") or 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0  # a provider's odd expires_in: assume the usual hour, renewed early anyway
        self._token = str(answer["access_token"])
        self._renew_at = started + lifetime - min(EARLY_SECONDS, lifetime / 2)
        renewed = str(answer.get("refresh_token") or "")
        if cfg.grant == "refresh_token" and renewed and renewed != form["refresh_token"]:
            try:  # Microsoft hands out a new one each time; the old one stays good until it expires
                save_refresh_token(cfg, renewed)
            except OSError as exc:
                log.warning("OAuth2: the new refresh token could not be stored in %s (%s); the old one is used "
                            "until it expires: make the file writable for inboxd", cfg.refresh_token_file,
                            exc.strerror)


def read_refresh_token(config: OAuth2Config) -> str:
    """The refresh token `inboxd auth login` stored; TokenError (refused) when there is none."""
    path = config.refresh_token_file
    try:
        token = path.read_text(encoding="utf-8").strip() if path else ""
    except OSError as exc:
        raise TokenError(f"OAuth2: no refresh token in {path} ({exc.strerror}): run `inboxd auth login`",
                         refused=True) from None
    if not token:
        raise TokenError(f"OAuth2: no refresh token in {path}: run `inboxd auth login`", refused=True)
    return token


def save_refresh_token(config: OAuth2Config, token: str) -> Path:
    """Write the refresh token to its file, readable by this user only (0600), replacing it whole."""
    path = config.refresh_token_file
    if path is None:
        raise InboxdError("OAuth2: refresh_token_file is not set")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    os.chmod(temporary, 0o600)  # O_CREAT's mode only applies to a new file
    os.replace(temporary, path)
    return path


def token_sources(*configs: OAuth2Config | None) -> list[HttpTokens | None]:
    """One token source per distinct configuration: IMAP and SMTP sharing a section share its token."""
    made: dict[OAuth2Config, HttpTokens] = {}
    return [made.setdefault(config, HttpTokens(config)) if config else None for config in configs]


def device_login(config: OAuth2Config, say: Callable[[str], None], post: Post = post_form,
                 sleep: Callable[[float], None] = time.sleep, timeout: float = 30.0) -> Path:
    """The device-code flow (RFC 8628): show the code, wait for the person to sign in, store the refresh token."""
    if not config.device_url:
        raise InboxdError("OAuth2: no device_url for `inboxd auth login` (set it in the oauth2 section)")
    form = {"client_id": config.client_id, "scope": config.scope}
    start = post(config.device_url, form, timeout)
    if "error" in start or "device_code" not in start:
        raise refused(start, config.device_url, "to start a sign-in")
    where = start.get("verification_uri") or start.get("verification_url")
    say(str(start.get("message") or f"To sign in, open {where} and enter the code {start.get('user_code')}"))
    poll = {"client_id": config.client_id, "grant_type": DEVICE_GRANT, "device_code": str(start["device_code"])}
    if config.client_secret:
        poll["client_secret"] = config.client_secret.value
    interval = float(start.get("interval", 5))
    deadline = time.monotonic() + float(start.get("expires_in", 900))
    while time.monotonic() < deadline:
        sleep(interval)
        answer = post(config.token_url, poll, timeout)
        if answer.get("error") == "authorization_pending":
            continue
        if answer.get("error") == "slow_down":
            interval += 5
            continue
        return _store(config, answer)
    raise InboxdError("OAuth2: the code expired before anyone signed in; run `inboxd auth login` again")


def browser_login(config: OAuth2Config, say: Callable[[str], None], port: int = 0, post: Post = post_form,
                  timeout: float = 30.0, patience: float = 900.0) -> Path:
    """The authorization-code flow with PKCE (RFC 7636) and a redirect to 127.0.0.1: store the refresh token."""
    if not config.authorize_url:
        raise InboxdError("OAuth2: no authorize_url for `inboxd auth login --browser` (set it in the oauth2 section)")
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, answer = secrets.token_urlsafe(16), {}

    class Redirect(BaseHTTPRequestHandler):
        timeout = 5  # a browser's idle preconnect must not hold the wait for the real answer

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            if query.get("state") == state:  # anything else is not the answer to our request
                answer.update(query)
            text = b"inboxd: done, you can close this page." if answer else b"inboxd: waiting for the sign-in."
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args: Any) -> None:
            pass

    with HTTPServer(("127.0.0.1", port), Redirect) as server:
        server.timeout = 1.0
        redirect = f"http://127.0.0.1:{server.server_address[1]}/"
        query = {"client_id": config.client_id, "redirect_uri": redirect, "response_type": "code",
                 "scope": config.scope, "access_type": "offline", "prompt": "consent", "state": state,
                 "code_challenge": challenge, "code_challenge_method": "S256"}
        say(f"Open this address in a browser and sign in as the mailbox's user:\n\n"
            f"{config.authorize_url}?{urllib.parse.urlencode(query)}\n\n"
            f"The browser is sent back to {redirect}: from another computer, first run "
            f"`ssh -L {server.server_address[1]}:127.0.0.1:{server.server_address[1]} THIS-HOST` there "
            f"(or pick the port with --port).")
        deadline = time.monotonic() + patience
        while not answer and time.monotonic() < deadline:
            server.handle_request()
    if "code" not in answer:
        raise refused(answer or {"error": "timeout", "error_description": "nobody signed in"},
                      config.authorize_url, "the sign-in")
    form = {"client_id": config.client_id, "grant_type": "authorization_code", "code": answer["code"],
            "redirect_uri": redirect, "code_verifier": verifier}
    if config.client_secret:
        form["client_secret"] = config.client_secret.value
    return _store(config, post(config.token_url, form, timeout))


def _store(config: OAuth2Config, answer: dict[str, Any]) -> Path:
    """Keep the refresh token of a successful sign-in."""
    if "error" in answer:
        raise refused(answer, config.token_url, "the sign-in")
    if not answer.get("refresh_token"):
        raise InboxdError(f"OAuth2: {config.token_url} gave no refresh token (is offline access in the scope?)")
    return save_refresh_token(config, str(answer["refresh_token"]))
