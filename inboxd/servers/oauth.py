"""A local OAuth2 token and introspection endpoint for tests: what Dovecot and the SMTP capture ask."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from base64 import urlsafe_b64encode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .base import HOST, _Managed


class TokenServer(_Managed):
    """`/token` (client_credentials, refresh_token, device_code and authorization_code grants), `/device`
    and `/introspect`.

    Tokens live `lifetime` seconds; `expire_all()` ends every token at once, as a revocation would.
    """

    def __init__(self, user: str, client_id: str = "inboxd", client_secret: str = "client-secret",
                 lifetime: float = 3600.0) -> None:
        """Prepare (not start) an endpoint that issues tokens for `user` to one client."""
        self.user, self.client_id, self.client_secret, self.lifetime = user, client_id, client_secret, lifetime
        self.refresh_token = "refresh-" + secrets.token_hex(8)
        self.issued: list[str] = []  # every access token, in order
        self.refused: list[str] = []  # tokens introspected after they expired, or never issued
        self._expiry: dict[str, float] = {}
        self._device_polls = 0
        self.codes: dict[str, str] = {}  # authorization code -> its PKCE challenge, as a sign-in left them
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        """Listen on a free port, in a thread."""
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
                status, body = endpoint.answer(self.path, form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="token-server", daemon=True).start()

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def active(self, token: str) -> bool:
        """True if this endpoint issued the token and it has not expired."""
        with self._lock:
            alive = self._expiry.get(token, 0.0) > time.monotonic()
            if not alive:
                self.refused.append(token)
            return alive

    def expire_all(self) -> None:
        """Every token issued so far stops being valid now."""
        with self._lock:
            self._expiry = dict.fromkeys(self._expiry, 0.0)

    def answer(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body for a POST to `path`."""
        if path == "/introspect":
            token = form.get("token", "")
            return 200, {"active": True, "username": self.user} if self.active(token) else {"active": False}
        if path == "/device":
            return 200, {"device_code": "device-1", "user_code": "ABCD-EFGH", "interval": 0, "expires_in": 60,
                         "verification_uri": f"{self.url}/activate"}
        if path != "/token":
            return 404, {"error": "not_found"}
        if form.get("client_id") != self.client_id:
            return 401, {"error": "invalid_client", "error_description": "unknown client"}
        grant = form.get("grant_type")
        if grant == "client_credentials" and form.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client", "error_description": "wrong client secret"}
        if grant == "refresh_token" and form.get("refresh_token") != self.refresh_token:
            return 400, {"error": "invalid_grant", "error_description": "the refresh token was revoked\nTrace: 1"}
        if grant == "authorization_code":
            challenge = self.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "").encode()
            if challenge != urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode():
                return 400, {"error": "invalid_grant", "error_description": "unknown code or wrong code_verifier"}
        elif grant == "urn:ietf:params:oauth:grant-type:device_code":
            self._device_polls += 1
            if self._device_polls == 1:
                return 400, {"error": "authorization_pending"}
        elif grant not in ("client_credentials", "refresh_token"):
            return 400, {"error": "unsupported_grant_type"}
        token = "access-" + secrets.token_hex(12)
        with self._lock:
            self._expiry[token] = time.monotonic() + self.lifetime
            self.issued.append(token)
        body: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}
        if grant != "client_credentials":
            body["refresh_token"] = self.refresh_token  # the same one again: rotation is the client's to store
        return 200, body
