"""`[http] listen`: /healthz and /metrics for a monitor, served from a thread of the daemon."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from .errors import InboxdError
from .health import Health, look, verdict
from .metrics import REGISTRY, Live

log = logging.getLogger(__name__)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape that hangs does not hold the daemon's stop


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # a scrape every 15 s is no news for the log
        pass


def _app(health: Health) -> Any:
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            healthy, summary = verdict(health.status, health.path, datetime.now(UTC))
            database = look()
            if healthy and not database.reachable:
                healthy, summary = False, f"database unreachable: {database.error}"
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{summary}\n".encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"inboxd serves /healthz and /metrics\n"]
    return app


@contextmanager
def serving(listen: tuple[str, int] | None, health: Health) -> Iterator[None]:
    """Serve /healthz and /metrics on `listen` while the block runs; nothing when it is None."""
    if listen is None:
        yield
        return
    host, port = listen
    try:
        server = make_server(host, port, _app(health), server_class=_Server6 if ":" in host else _Server,
                             handler_class=_Quiet)
    except OSError as exc:
        raise InboxdError(f"[http] listen = \"{host}:{port}\": cannot listen there: {exc.strerror or exc}") from None
    live = Live(health)
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
