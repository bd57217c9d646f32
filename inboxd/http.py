"""`[http] listen`: /healthz and /metrics for a monitor, and /report for this machine, from a thread of the daemon."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from .clock import Clock, SystemClock
from .errors import InboxdError
from .health import Health, look, verdict
from .metrics import REGISTRY, Live
from .models import use_team
from .settings import Config

log = logging.getLogger(__name__)
_WALL = SystemClock()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape that hangs does not hold the daemon's stop


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # a scrape every 15 s is no news for the log
        pass


def _app(teams: Mapping[str, Health], configs: Sequence[Config] = (), clock: Clock = _WALL,
         named: bool = False) -> Any:
    """The endpoints over the teams this process serves (their health by key) and their configs."""
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/report" and configs:
            return _report(environ, start_response, configs, clock)
        if path == "/healthz":
            healthy, summary = healthz(teams, named)
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{summary}\n".encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"inboxd serves /healthz, /metrics and (to this machine) /report\n"]
    return app


def healthz(teams: Mapping[str, Health], named: bool = False) -> tuple[bool, str]:
    """/healthz: healthy when every team is; one line for one team (unless `named`: a worker names the teams
    it holds, even one or none), else a line naming those that are not, then one line per team."""
    now, database = datetime.now(UTC), look()
    verdicts = {}
    for key, health in teams.items():
        healthy, summary = verdict(health.status, health.path, now)
        if healthy and not database.reachable:
            healthy, summary = False, f"database unreachable: {database.error}"
        verdicts[key] = healthy, summary
    if len(verdicts) == 1 and not named:
        return next(iter(verdicts.values()))
    if not verdicts:
        return True, "ok: no team's mailbox held here"
    failing = [key for key, (healthy, _) in verdicts.items() if not healthy]
    head = f"not ok: {', '.join(failing)} of {len(verdicts)} teams" if failing else f"ok: all {len(verdicts)} teams"
    return not failing, "\n".join([head, *(f"{key}: {summary}" for key, (_, summary) in verdicts.items())])


def _loopback(address: str) -> bool:
    """Whether a client's address is this machine's own (127.0.0.0/8, ::1, or 127.x as IPv4-mapped IPv6)."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def _named_here(host: str | None) -> bool:
    """Whether the Host header names this machine as `localhost` or by an address, not by a name.

    A web page can point its own name at 127.0.0.1 (DNS rebinding) and read what a browser on this
    machine, or at the end of an ssh tunnel, fetches from it; its Host header is then that name.
    """
    if host is None:
        return True  # only HTTP/1.0 clients send none, and no browser
    name = urlsplit(f"//{host}").hostname or ""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name == "localhost"
    return True


def _report(environ: dict[str, Any], start_response: Any, configs: Sequence[Config],
            clock: Clock) -> Iterable[bytes]:
    """The report page of one team (`?team=KEY`, else the first): subjects and names are personal data, so only
    clients on this machine get it."""
    text = [("Content-Type", "text/plain; charset=utf-8")]
    if not _loopback(environ.get("REMOTE_ADDR", "")):
        start_response("403 Forbidden", text)
        return [b"/report answers clients on this machine only: use ssh -L, or a proxy there that authenticates\n"]
    if not _named_here(environ.get("HTTP_HOST")):
        start_response("403 Forbidden", text)
        return [b"/report answers a Host of localhost or an address only (a proxy: set Host to 127.0.0.1)\n"]
    from .report import POLICY, default_scope, gather, page  # the stats queries load only when asked
    asked = parse_qs(environ.get("QUERY_STRING", ""))
    queue, owner = asked.get("queue", [None])[0], (asked.get("owner", [""])[0].lower() or None)
    wanted = asked.get("team", [configs[0].team.key])[0].upper()
    config = next((c for c in configs if c.team.key.upper() == wanted), None)
    if config is None:
        start_response("404 Not Found", text)
        return [f"/report?team=KEY: the teams are {', '.join(c.team.key for c in configs)}\n".encode()]
    use_team(config.team.key)  # a thread per request: the figures are this team's
    if any(value is not None and (len(value) > 320 or not value.isprintable()) for value in (queue, owner)):
        start_response("400 Bad Request", text)
        return [b"/report takes ?queue=NAME and ?owner=ADDRESS: printable text, at most 320 characters\n"]
    now = clock.now()
    scope = default_scope(config, now, queue=queue, owner=owner)
    try:
        with read_only():
            body = page(config, gather(config, scope, now), now).encode()
    except Exception as exc:  # the database away, a figure failing: a line for the admin, not a traceback
        log.warning("http: /report failed: %s", " ".join(str(exc).split()) or type(exc).__name__)
        start_response("503 Service Unavailable", text)
        return [b"the report cannot be made now; the log says why\n"]
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
                              ("Content-Security-Policy", f"{POLICY}; frame-ancestors 'none'"),
                              ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")])
    return [body]


@contextmanager
def read_only() -> Iterator[None]:
    """A new connection of this thread's own for the block, which cannot write (the daemon's stay as they are)."""
    import peewee as pw

    from .models import db
    db.connect()  # peewee's connections are per thread: this one is new (an open one would be an error here)
    try:
        if isinstance(db.obj, pw.SqliteDatabase):
            db.execute_sql("PRAGMA query_only = ON")
        else:
            db.execute_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        yield
    finally:
        db.close()


@contextmanager
def serving(listen: tuple[str, int] | None, teams: Mapping[str, Health], configs: Sequence[Config] = (),
            clock: Clock = _WALL, labelled: bool = False) -> Iterator[None]:
    """Serve /healthz, /metrics and (given the configs) /report on `listen` while the block runs; nothing if None.

    `teams`: the health of each team the process serves, by key (one for a lone daemon); `labelled`: the
    gauges carry a `team` label whatever their number (a worker's teams come and go).
    """
    if listen is None:
        yield
        return
    host, port = listen
    try:
        server = make_server(host, port, _app(teams, configs, clock, labelled),
                             server_class=_Server6 if ":" in host else _Server, handler_class=_Quiet)
    except OSError as exc:
        raise InboxdError(f"[http] listen = \"{host}:{port}\": cannot listen there: {exc.strerror or exc}") from None
    live = Live(teams, labelled)
    REGISTRY.register(live)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    log.info("http: /healthz and /metrics on http://%s:%d", host, server.server_port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        REGISTRY.unregister(live)
