"""The commands of first contact and of one pass (docs/cli.md): `adopt`, `once` and `once --dry-run`."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

import click

from .adopt import Adoption, Found, adoption, describe, parse_choice

if TYPE_CHECKING:
    from .config import Config
    from .daemon import Daemon
    from .pipeline import Outcome

log = logging.getLogger("inboxd")
TROUBLE_EXIT = 1  # `once` read the mail, and some was parked or could not be delivered


@click.command()
@click.option("--dry-run", is_flag=True,
              help="list what a run would do (items, mails and to whom, folders) and change nothing")
@click.pass_context
def once(ctx: click.Context, dry_run: bool) -> None:
    """Process new mail, send what is due, and exit (every team in turn, or `--team`'s); exit 1 if mail was parked
    or could not be delivered."""
    from .cli import _each_team

    def one_team(config: Config, prefix: str) -> int:
        if dry_run:
            from .preview import preview_once
            click.echo(f"{prefix}{preview_once(config)}")
            return 0
        from .daemon import Daemon
        line, trouble = _one_pass(Daemon(config))
        (log.warning if trouble else log.info)("%s%s", prefix, line)
        return TROUBLE_EXIT if trouble else 0

    _each_team(ctx, one_team)


@click.command()
@click.argument("choice", metavar="now|all|SINCE-DATE")
@click.option("--no-ack", is_flag=True,
              help="track the mail already there without acknowledging it: no mail is sent for it")
@click.option("--dry-run", is_flag=True, help="list what adopting would do and change nothing")
@click.pass_context
def adopt(ctx: click.Context, choice: str, no_ack: bool, dry_run: bool) -> None:
    """First contact: leave the mail already there (now), track it since a day (2026-11-01), or all of it.

    The mail it tracks is read at once, as by `once`.
    """
    from .cli import _config
    from .daemon import Daemon
    config = _config(ctx)
    chosen = parse_choice(choice, config)  # a typo fails before anything connects
    if dry_run:
        from .preview import preview_once
        click.echo(preview_once(config, adopting=(chosen, not no_ack)))
        return
    daemon = Daemon(config)
    adopted, found = _record(daemon, chosen, not no_ack)
    click.echo(describe(adopted, found, config))
    if adopted.last_uid < adopted.backlog_uid:
        line, trouble = _one_pass(daemon)
        click.echo(line)
        ctx.exit(TROUBLE_EXIT if trouble else 0)


def _record(daemon: Daemon, chosen: str | datetime, ack: bool) -> tuple[Adoption, Found]:
    """Survey the folder and save the choice, this inboxd alone on the mailbox; refused once inboxd reads it."""
    from .instance import InstanceLock
    lock = InstanceLock(daemon.config)
    lock.acquire()
    try:
        uidvalidity = daemon.source.open()
        try:
            found = daemon.survey()
            adopted = adoption(chosen, ack, found)
            daemon.adopt(uidvalidity, adopted)
        finally:
            daemon.source.close()
    finally:
        lock.release()
    return adopted, found


def _one_pass(daemon: Daemon) -> tuple[str, bool]:
    """`once`, counting what became of each mail and what could not be delivered: its last line, and any trouble."""
    kinds: Counter[str] = Counter()
    created = Created()

    def count(outcome: Outcome) -> None:
        kinds[outcome.kind] += 1
        if outcome.kind == "item" and outcome.ref:
            created.add(outcome.ref)

    daemon.listeners.append(count)
    read = daemon.once()
    undelivered, parked = len(_undelivered(daemon)), kinds["parked"]
    items = f" ({created.count} new item(s): {created})" if created.count else ""
    line = (f"once: {read} new mail(s) processed{items}; {parked} parked"
            f"{' (inboxd items --all lists them)' if parked else ''}, {undelivered} undelivered"
            f"{' (the log above says why; what can be retried stays in the outbox)' if undelivered else ''}")
    return line, bool(parked or undelivered)


def _undelivered(daemon: Daemon) -> set[int]:
    """The outbox rows left unsent (waiting for a retry, or never tried while the server was away), and those
    this run gave up on or that some recipients refused."""
    from .models import Outbox, team
    pending = Outbox.select(Outbox.id).where((Outbox.team == team()) & (Outbox.status == "pending"))
    return {row.id for row in pending} | set(daemon.ledger.undelivered)


class Created:
    """The items one pass created, for its last line: how many, and the first three and the last of their refs.

    Not every ref: a pass over a backlog of 10,000 mails would hold them all (0.6 MB) for one line.
    """

    def __init__(self) -> None:
        self.count = 0
        self.kept: list[str] = []

    def add(self, ref: str) -> None:
        self.count += 1
        self.kept[3:] = [ref]  # the first three stay; the fourth place holds the latest

    def __str__(self) -> str:
        return ", ".join(self.kept) if self.count <= 3 else f"{self.kept[0]} … {self.kept[-1]}"
