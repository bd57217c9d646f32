"""The daemon's figures for Prometheus: counters kept as things happen, gauges read when scraped."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import peewee as pw
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .health import Health, look, verdict
from .models import Item, forget_connection

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
    """The gauges of a running daemon, read at each scrape from each team's health and the database.

    Serving several teams, each team's gauge has a `team` label; the outbox and the database are the
    deployment's (one database), and the counters above are the process's, summed over its teams.
    """

    def __init__(self, teams: Mapping[str, Health], labelled: bool = False) -> None:
        """`labelled`: a `team` label even for one team (a worker's teams come and go)."""
        self.teams = teams
        self.labels = ["team"] if labelled or len(teams) > 1 else []

    def _team(self, key: str) -> list[str]:
        return [key] if self.labels else []

    def collect(self) -> Iterator[Metric]:
        now, database = datetime.now(UTC), look()
        families = {name: GaugeMetricFamily(name, documentation, labels=self.labels + extra)
                    for name, documentation, extra in _GAUGES}
        for key, health in self.teams.items():
            status, team = health.status, self._team(key)
            healthy, _ = verdict(status, health.path, now)
            families["inboxd_healthy"].add_metric(team, int(healthy and database.reachable))
            families["inboxd_last_imap_activity_timestamp_seconds"].add_metric(team, _timestamp(status.last_imap))
            families["inboxd_imap_activity_age_seconds"].add_metric(
                team, (now.timestamp() - _timestamp(status.last_imap)) if status.last_imap else float("inf"))
            for state in ("idle", "polling", "down"):
                families["inboxd_imap_connection"].add_metric(team + [state], int(status.imap == state))
            families["inboxd_mails_waiting"].add_metric(team, status.waiting or 0)
            families["inboxd_last_sweep_timestamp_seconds"].add_metric(team, _timestamp(status.last_sweep))
        yield from families.values()
        yield _gauge("inboxd_database_up", "1 when the database answers", int(database.reachable))
        if database.reachable:
            outbox = GaugeMetricFamily("inboxd_outbox_mails", "Mails in the outbox: pending (the backlog) or dead "
                                       "(of every team)", labels=["status"])
            outbox.add_metric(["pending"], database.pending or 0)
            outbox.add_metric(["dead"], database.dead or 0)
            yield outbox
            yield from self._items()

    def _items(self) -> Iterator[Metric]:
        items = GaugeMetricFamily("inboxd_items", "Items by status", labels=self.labels + ["status"])
        try:
            for key, status, count in Item.select(Item.team, Item.status, pw.fn.COUNT(Item.id)) \
                    .where(Item.team.in_(list(self.teams))).group_by(Item.team, Item.status).tuples():
                items.add_metric(self._team(key) + [status], count)
        except pw.PeeweeException:
            return  # gone since the outbox was counted: inboxd_database_up says so at the next scrape
        finally:
            forget_connection()
        yield items


_GAUGES: tuple[tuple[str, str, list[str]], ...] = (  # each team's: name, help, labels besides the team
    ("inboxd_healthy", "1 when inboxd reads mail and its database answers (as inboxd health)", []),
    ("inboxd_last_imap_activity_timestamp_seconds", "When the mailbox was last read (0: never)", []),
    ("inboxd_imap_activity_age_seconds", "Seconds since the mailbox was last read (a stall grows it)", []),
    ("inboxd_imap_connection", "1 for the IMAP connection's state now", ["state"]),
    ("inboxd_mails_waiting", "Mails in the folder not processed yet, as of the last read", []),
    ("inboxd_last_sweep_timestamp_seconds", "When the jobs last ran through (0: never)", []),
)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
