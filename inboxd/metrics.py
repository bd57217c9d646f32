"""The daemon's figures for Prometheus: counters kept as things happen, gauges read when scraped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import peewee as pw
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .health import Health, look, verdict
from .models import Item, forget_connection, team

if TYPE_CHECKING:
    from .pipeline import Outcome

REGISTRY = CollectorRegistry()  # inboxd's own, so that each test's daemon adds and removes its gauges alone
MAILS_IN = Counter("inboxd_mails_in", "Mails read from the mailbox, by what became of them", ["outcome"],
                   registry=REGISTRY)
MAILS_SENT = Counter("inboxd_mails_sent", "Mails the SMTP server took, by kind", ["kind"], registry=REGISTRY)
MAILS_FAILED = Counter("inboxd_mails_failed", "Failed attempts to send a mail, by kind; final: given up on",
                       ["kind", "final"], registry=REGISTRY)
ACK_LATENCY = Histogram("inboxd_acknowledgement_latency_seconds",
                        "From reading a request to the SMTP server taking its acknowledgement", registry=REGISTRY,
                        buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600))
SWEEP_DURATION = Histogram("inboxd_sweep_duration_seconds", "How long one run of the jobs took", registry=REGISTRY,
                           buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))


def mail_in(outcome: Outcome) -> None:
    """A daemon listener: one mail read, counted by its outcome."""
    MAILS_IN.labels(outcome.kind).inc()


def sent(kind: str, ack_wait: float | None) -> None:
    """The SMTP server took a mail from the outbox; an acknowledgement's wait (seconds) is observed."""
    MAILS_SENT.labels(kind).inc()
    if ack_wait is not None:
        ACK_LATENCY.observe(ack_wait)


def failed(kind: str, final: bool) -> None:
    """A mail could not be sent this time (final: given up on)."""
    MAILS_FAILED.labels(kind, "true" if final else "false").inc()


def _timestamp(moment: str | None) -> float:
    return datetime.fromisoformat(moment).timestamp() if moment else 0.0


class Live(Collector):
    """The gauges of a running daemon, read at each scrape from its health and its database."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        status, now = self.health.status, datetime.now(UTC)
        database = look()
        healthy, _ = verdict(status, self.health.path, now)
        yield _gauge("inboxd_healthy", "1 when inboxd reads mail and its database answers (as inboxd health)",
                     int(healthy and database.reachable))
        yield _gauge("inboxd_last_imap_activity_timestamp_seconds", "When the mailbox was last read (0: never)",
                     _timestamp(status.last_imap))
        yield _gauge("inboxd_imap_activity_age_seconds", "Seconds since the mailbox was last read (a stall grows it)",
                     (now.timestamp() - _timestamp(status.last_imap)) if status.last_imap else float("inf"))
        connection = GaugeMetricFamily("inboxd_imap_connection", "1 for the IMAP connection's state now",
                                       labels=["state"])
        for state in ("idle", "polling", "down"):
            connection.add_metric([state], int(status.imap == state))
        yield connection
        yield _gauge("inboxd_mails_waiting", "Mails in the folder not processed yet, as of the last read",
                     status.waiting or 0)
        yield _gauge("inboxd_last_sweep_timestamp_seconds", "When the jobs last ran through (0: never)",
                     _timestamp(status.last_sweep))
        yield _gauge("inboxd_database_up", "1 when the database answers", int(database.reachable))
        if database.reachable:
            outbox = GaugeMetricFamily("inboxd_outbox_mails", "Mails in the outbox: pending (the backlog) or dead",
                                       labels=["status"])
            outbox.add_metric(["pending"], database.pending or 0)
            outbox.add_metric(["dead"], database.dead or 0)
            yield outbox
            yield from _items()


def _items() -> Iterator[Metric]:
    items = GaugeMetricFamily("inboxd_items", "Items by status", labels=["status"])
    try:
        for status, count in Item.select(Item.status, pw.fn.COUNT(Item.id)).where(Item.team == team()) \
                .group_by(Item.status).tuples():
            items.add_metric([status], count)
    except pw.PeeweeException:
        return  # gone since the outbox was counted: inboxd_database_up says so at the next scrape
    finally:
        forget_connection()
    yield items


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
