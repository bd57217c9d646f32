"""The command line (docs/cli.md): one function per command."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__, init, logs
from .cli_auth import auth, report_connections
from .clock import SystemClock
from .config import Config, TeamConfig, default_config_path, load_config, load_teams
from .domain import STATUSES
from .errors import InboxdError
from .wording import local_day, local_time, short_time

if TYPE_CHECKING:
    from .queries import ItemRecord

log = logging.getLogger("inboxd")
TEAM_OPTION = "inboxd.team"  # where `--team`, an option of every command, leaves its value (ctx.meta)


def _setup_logging(verbose: bool) -> None:
    logs.setup(verbose)  # as text; `_config` switches to the config's [log] format once it is read


class _Group(click.Group):
    """Turns InboxdError, and a database that cannot be opened or written, into one line on stderr and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        import peewee
        try:
            return super().invoke(ctx)
        except InboxdError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(getattr(exc, "exit_code", 1))  # 3: logins refused (docs/cli.md)
        except peewee.PeeweeException as exc:  # a read-only mount, a wrong path, a server that is down
            where = _database_label(ctx)
            click.echo(f"error: database {where}: {' '.join(str(exc).split()) or type(exc).__name__}", err=True)
            ctx.exit(1)


def _database_label(ctx: click.Context) -> str:
    """The configured database URL with any password taken out, for an error line."""
    try:
        url = load_config(ctx.find_root().obj, secrets=False).database_url
    except Exception:  # the config itself is what failed: say only that it was the database
        return "(see [database] url)"
    from .settings import shown_url
    return shown_url(url)


@click.group(cls=_Group)
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="config file (default: $INBOXD_CONFIG or ./config.toml)")
@click.option("-v", "--verbose", is_flag=True, help="log debug detail")
@click.version_option(version=__version__, prog_name="inboxd")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: bool) -> None:
    """inboxd: a shared mailbox turned into a request tracker that keeps the team's promises."""
    _setup_logging(verbose)
    ctx.obj = config_path or default_config_path()


def _teams(ctx: click.Context, secrets: bool = True) -> tuple[Config, ...]:
    """The teams a command is about: the one `--team` names, else all of the config's (teams.d) or its one."""
    path: Path = ctx.find_root().obj
    if not path.exists():
        raise InboxdError(f"{path}: config file not found (pass --config FILE, set INBOXD_CONFIG, "
                          f"or write a starter one with `inboxd init DIR`)")
    teams = load_teams(path, secrets=secrets)
    logs.use(teams[0].log_format)
    wanted = ctx.meta.get(TEAM_OPTION)
    if wanted is None:
        return teams
    # A prefix first: `--team hr` is never both HR and the team whose file happens to be hr.toml.
    chosen = [c for c in teams if wanted.upper() == c.team.key.upper()] \
        or [c for c in teams if c.team_file is not None and wanted == c.team_file.stem]
    if not chosen:
        raise InboxdError(f"--team {wanted}: no such team (the teams are {_names(teams)})")
    return tuple(chosen)


def _names(teams: tuple[Config, ...]) -> str:
    return "|".join(c.team.key for c in teams)


def _config(ctx: click.Context, secrets: bool = True, any_team: bool = False) -> Config:
    """The one team a command works for (`--team`; a teams.d deployment needs it), set as this thread's team.

    any_team: the command is about what the teams share (the database), and the first one does.
    """
    from .models import use_team
    teams = _teams(ctx, secrets)
    if len(teams) > 1 and not any_team:
        raise InboxdError(f"several teams: pick one with --team {_names(teams)} (run, once, sweep, check and "
                          f"health serve every team without it)")
    use_team(teams[0].team.key)
    return teams[0]


def _each_team(ctx: click.Context, work: Callable[[Config, str], int], secrets: bool = True) -> None:
    """`work(config, prefix)` for the team `--team` names, or for every team in turn; exit with the worst code.

    With several teams each line `work` prints starts with the prefix ("HR: "), and a team's error is
    printed and the next team goes on; `work` returns its exit code (0: all well).
    """
    from .models import use_team
    teams, worst = _teams(ctx, secrets), 0
    for config in teams:
        use_team(config.team.key)
        if len(teams) == 1:
            worst = work(config, "")
            continue
        try:
            worst = max(worst, work(config, f"{config.team.key}: "))
        except InboxdError as exc:
            click.echo(f"error: {config.team.key}: {exc}", err=True)
            worst = max(worst, getattr(exc, "exit_code", 1))
    ctx.exit(worst)


@cli.command()
@click.option("--standby", is_flag=True,
              help="if another inboxd works on this mailbox and database, wait and take over when it stops")
@click.pass_context
def run(ctx: click.Context, standby: bool) -> None:
    """Run the daemon: watch the mailbox (IDLE or polling) until SIGTERM; every team's, each in a thread of its own."""
    from .daemon import Daemon, start_patiently
    from .fleet import Fleet
    from .models import team, use_team
    teams = _teams(ctx)
    use_team(teams[0].team.key)
    if teams[0].database_url.startswith("postgres"):
        _work(teams)
        return
    daemons = [start_patiently(partial(Daemon, config)) for config in teams]
    served: Daemon | Fleet = daemons[0] if len(daemons) == 1 else Fleet(daemons)
    if len(daemons) > 1:
        use_team("")  # this thread works for no team: its lines (start, signals, stop) are the process's
        logs.name_teams(team)  # each team's thread says whose its lines are
    signal.signal(signal.SIGTERM, lambda *_: served.stop())
    signal.signal(signal.SIGINT, lambda *_: served.stop())
    signal.signal(signal.SIGHUP, lambda *_: served.request_reload())
    log.info("inboxd %s starting for %s", __version__, ", ".join(d.config.team.address for d in daemons))
    served.run(standby=standby)


def _work(teams: tuple[Config, ...]) -> None:
    """`run` on PostgreSQL: one worker among any number, serving the teams whose mailbox lease it holds."""
    from .daemon import Daemon, start_patiently
    from .leases import RowLeases, new_holder, worker_session_name
    from .models import team, use_team
    from .workers import Workers
    holder = new_holder()
    # Every session of this worker, its delivery processes' too, bears its name: a worker taking over from it
    # when it froze ends them by that name (RowLeases.fence).
    os.environ["PGAPPNAME"] = worker_session_name(holder)
    try:
        start_patiently(partial(Daemon, teams[0]))  # the schema migrated, the database reachable, before any lease
        worker = Workers(teams, RowLeases(teams[0].database_url, holder), delivery=True)
        use_team("")  # this thread works for no team: its lines (start, leases, stop) are the worker's
        logs.name_teams(team)
        signal.signal(signal.SIGTERM, lambda *_: worker.stop())
        signal.signal(signal.SIGINT, lambda *_: worker.stop())
        signal.signal(signal.SIGHUP, lambda *_: worker.request_reload())
        log.info("inboxd %s starting as worker %s for %d team(s): %s", __version__, holder, len(teams),
                 ", ".join(c.team.address for c in teams))
        worker.run()
    finally:
        os.environ.pop("PGAPPNAME", None)  # run in-process (tests): the next connections are not this worker's


@cli.command()
@click.option("--keep", is_flag=True, help="keep the temporary folder and print where it is")
def demo(keep: bool) -> None:
    """Run the whole flow on an embedded mailbox; no setup needed."""
    from .servers import missing_demo_packages
    if missing := missing_demo_packages():
        raise InboxdError(f"the demo needs {' and '.join(missing)}, which a plain install leaves out: "
                          f"pip install {' '.join(missing)} (or '.[demo]' from a checkout)")
    from .demo import run_demo
    run_demo(keep=keep)


@cli.command()
@click.option("--connect", is_flag=True, help="also log in to IMAP and SMTP (nothing is sent) and say how it went")
@click.pass_context
def check(ctx: click.Context, connect: bool) -> None:
    """Validate config, secrets, rules and templates (every team's, or `--team`'s); exit 1 with file:line errors."""
    from .checks import check_everything, check_secrets, missing_translations, security_warnings

    def check_team(config: Config, prefix: str) -> int:
        check_secrets(config)
        rules, renderer = check_everything(config)
        for warning in security_warnings(config):
            click.secho(f"WARNING: {prefix}{warning}", err=True, fg="red", bold=True)
        for warning in missing_translations(rules, renderer):  # not an error: the default set's is sent instead
            click.secho(f"WARNING: {prefix}{warning}", err=True, fg="yellow")
        click.echo(f"{prefix}ok: {config.team_file or config.path}: {len(rules.rules)} rule(s) in "
                   f"{len(rules.files)} file(s) under {config.rules_dir}, {len(renderer.names())} template(s) under "
                   f"{config.templates_dir}"
                   + "".join(f", {len(renderer.names(language))} in {language}/"
                             for language in sorted(renderer.languages) if language != renderer.language))
        return 1 if connect and not report_connections(config) else 0

    _each_team(ctx, check_team)


@cli.group()
def rules() -> None:
    """Work with the rule files."""


@rules.command("test")
@click.argument("mail", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def rules_test(ctx: click.Context, mail: Path) -> None:
    """Show how MAIL.eml would be handled: no database, no network."""
    from .dryrun import explain
    click.echo(explain(_config(ctx, secrets=False), mail.read_bytes(), SystemClock().now()))


def _open_db(ctx: click.Context) -> Config:
    from .models import open_database
    config = _config(ctx, secrets=False)
    open_database(config.database_url, migrate=False)  # read-only: never creates or migrates
    return config


def _open_db_all(ctx: click.Context) -> tuple[Config, ...]:
    """The teams asked about (`--team`, else every one), with their shared database opened read-only."""
    from .models import open_database
    teams = _teams(ctx, secrets=False)
    open_database(teams[0].database_url, migrate=False)
    return teams


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def item_json(item: Any, team: TeamConfig) -> dict[str, Any]:
    """The fields of `items --json` (docs/cli.md)."""
    return {"ref": team.ref(item.id), "subject": item.subject, "requester": item.requester,
            "owner": item.owner, "queue": item.queue, "status": item.status,
            "priority": item.priority, "tags": list(item.tags or []),
            "created_at": _iso(item.created_at), "due_at": _iso(item.due_at),
            "acknowledged_at": _iso(item.acknowledged_at),
            "first_response_at": _iso(item.first_response_at),
            "resolved_at": _iso(item.resolved_at), "satisfaction": item.satisfaction}


@cli.command()
@click.option("--open", "which", flag_value="open", default=True, help="open items only (default)")
@click.option("--all", "which", flag_value="all", help="every item")
@click.option("--queue", help="only this queue")
@click.option("--owner", help="only this owner's items")
@click.option("--requester", metavar="ADDR", help="only the items this address asked for (in any case)")
@click.option("--search", "text", metavar="TEXT",
              help="only items with every word of TEXT, in any order, in the mail people sent them (subject or text)")
@click.option("--since", metavar="DATE", help="only items created since this ISO 8601 date or moment "
                                              "(without an offset, in the team's timezone)")
@click.option("--status", type=click.Choice([str(s) for s in STATUSES]),
              help="only items in this status (open or not)")
@click.option("--tag", help="only items with this tag")
@click.option("--json", "as_json", is_flag=True, help="a JSON array")
@click.pass_context
def items(ctx: click.Context, which: str, queue: str | None, owner: str | None, requester: str | None,
          text: str | None, since: str | None, status: str | None, tag: str | None, as_json: bool) -> None:
    """List items (open ones unless --all or --status) of every team or of `--team`; the filters must all hold."""
    from .search import Filters, matching, since_moment
    teams = _open_db_all(ctx)
    config = teams[0]  # --since without an offset is in the first team's timezone
    several = len(teams) > 1
    by_key = {c.team.key: c for c in teams}
    tz = config.calendar.tz
    try:
        start = since_moment(since, tz) if since is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    filters = Filters(queue=queue, owner=owner, requester=requester, text=text, since=start, status=status,
                      tag=tag, open_only=which == "open", teams=tuple(by_key))
    found = matching(filters)
    if as_json:
        click.echo(json.dumps([item_json(i, by_key[i.team].team) | ({"team": i.team} if several else {})
                               for i in found], indent=2, ensure_ascii=False))
        return
    count = 0
    for i in found:
        team = by_key[i.team]
        if not count:
            click.echo(f"{'REF':<9} " + (f"{'TEAM':<14} " if several else "")
                       + f"{'STATUS':<10} {'PRIO':<7} {'QUEUE':<12} {'OWNER':<22} {'DUE':<16} SUBJECT")
        count += 1
        due = short_time(i.due_at, team.calendar.tz) if i.due_at else "-"
        click.echo(f"{team.team.ref(i.id):<9} " + (f"{team.team.name[:14]:<14} " if several else "")
                   + f"{i.status:<10} {i.priority:<7} {i.queue:<12} {(i.owner or '-'):<22} {due:<16} {i.subject[:60]}")
    if filters.given():
        click.echo(f"{count} item(s) match")
    elif not count:
        click.echo("no items" + (" open" if which == "open" else ""))
    for team in teams:
        _needs_attention(team, everything=which == "all", named=several)


def _needs_attention(config: Config, everything: bool, named: bool = False) -> None:
    """Mail inboxd could not handle: kept on the server, listed here until a person deals with it."""
    from .models import Message
    parked = list(Message.select().where((Message.team == config.team.key) & (Message.direction == "in")
                                         & (Message.outcome == "parked")).order_by(Message.id))
    if not parked:
        return
    where = config.mailbox.attention_folder or config.mailbox.folder
    whose = f"{config.team.name}: " if named else ""
    if not everything:
        click.echo(f"\n{whose}{len(parked)} mail(s) need attention (kept in {where!r}): inboxd items --all lists them")
        return
    click.echo(f"\n{whose}needs attention: {len(parked)} mail(s) inboxd could not handle, kept in {where!r}")
    for m in parked:
        when = short_time(m.created_at, config.calendar.tz)
        click.echo(f"  {when}  {m.sender or '(no sender)':<28} {m.subject[:50] or '(no subject)'}\n"
                   f"      {m.message_id}: {m.reason}")


@cli.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="JSON with fields and events")
@click.pass_context
def item(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show one item (like IT-42): fields, the requester's other items, history, every mail in and out."""
    from .models import use_team
    from .queries import item_record
    from .search import others
    teams = _open_db_all(ctx)
    prefix = ref.upper().strip("[] ").rpartition("-")[0]  # the team a reference names, of those asked about
    config = next((c for c in teams if c.team.ref_prefix.upper() == prefix), teams[0] if len(teams) == 1 else None)
    if config is None:
        raise InboxdError(f"no item {ref[:40]!r}: name it with its team's prefix "
                          f"({', '.join(c.team.ref(42) for c in teams)})")
    use_team(config.team.key)
    team, tz = config.team, config.calendar.tz
    number = ref.upper().strip("[] ").removeprefix(team.ref_prefix.upper() + "-")
    found = item_record(int(number), team.address) if number.isascii() and number.isdigit() \
        and len(number) <= 12 else None
    if found is None:
        raise InboxdError(f"no item {ref[:40]!r} (references look like {team.ref(42)})")
    theirs = others(int(number), found.item.requester)
    if as_json:
        click.echo(json.dumps(_item_details_json(found, theirs, team), indent=2, ensure_ascii=False))
    else:
        _print_item(found, theirs, team, tz)


def _other_json(other: Any, team: TeamConfig) -> dict[str, Any]:
    """One of the requester's other items, in `item --json`."""
    return {"ref": team.ref(other.id), "status": other.status, "created_at": _iso(other.created_at),
            "subject": other.subject}


def _item_details_json(record: ItemRecord, others: list[Any], team: TeamConfig) -> dict[str, Any]:
    """`item --json`: the fields of `items --json`, the promise, the requester's other items, every event and mail."""
    found = record.item
    data = item_json(found, team)
    data["follows"] = team.ref(found.follows_id) if found.follows_id else None
    data |= {"requested_due_at": _iso(found.requested_due_at), "on_track": bool(found.on_track),
             "paused_at": _iso(found.paused_at), "last_told_at": _iso(found.last_told_at)}
    data["others"] = [_other_json(other, team) for other in others]
    data["events"] = [{**e, "at": _iso(e["at"])} for e in record.events]
    data["mail"] = [{**m, "at": _iso(m["at"])} for m in record.mail]
    return data


def _print_item(record: ItemRecord, others: list[Any], team: TeamConfig, tz: tzinfo) -> None:
    """`item`: the fields, the requester's other items, the history and the conversation, for people."""
    found = record.item

    def when(moment: datetime | None) -> str:
        return local_time(moment, tz, zone=True) if moment else "-"

    for key, value in item_json(found, team).items():
        value = when(getattr(found, key)) if key.endswith("_at") else value
        value = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"{key + ':':<19} {value if value not in (None, '') else '-'}")
    if found.follows_id:
        click.echo(f"{'follows:':<19} {team.ref(found.follows_id)}")
    if found.requested_due_at:
        click.echo(f"{'requested_due_at:':<19} {when(found.requested_due_at)}")
    if found.on_track:
        click.echo(f"{'on_track:':<19} yes (#ontrack: no automatic notice to the requester)")
    if found.paused_at:
        click.echo(f"{'paused_at:':<19} {when(found.paused_at)} (waiting on the requester: the date is on hold)")
    click.echo(f"{'last_told_at:':<19} {when(found.last_told_at)} (the requester's last mail from us)")
    if found.requester:
        click.echo(f"\nother items from {found.requester} (newest first):" if others else
                   f"\nother items from {found.requester}: none")
    for other in others:
        click.echo(f"  {team.ref(other.id):<9} {other.status:<10} {local_day(other.created_at, tz)}  "
                   f"{other.subject[:60]}")
    click.echo("\nhistory:")
    for e in record.events:
        click.echo(f"  {when(e['at'])}  {e['actor']:<24} {e['kind']:<16} {e['detail']}")
    click.echo("\nconversation:")
    for m in record.mail:
        who = f"<- from {m['from']}" if m["direction"] == "in" else f"-> to {', '.join(m['to'])}"
        click.echo(f"\n  {when(m['at'])}  {who}  [{m['kind']}, {m['status']}]\n  Subject: {m['subject']}")
        for line in (m["text"] or "(no text kept)").strip().splitlines():
            click.echo(f"  | {line}")


@cli.command()
@click.option("--at", "at", metavar="ISO-8601",
              help="run the jobs as of this moment, e.g. 2026-12-03T15:00+01:00 (default: now; "
                   "without an offset, the team's timezone)")
@click.option("--dry-run", is_flag=True, help="list what would be sent, to whom and why; send nothing")
@click.pass_context
def sweep(ctx: click.Context, at: str | None, dry_run: bool) -> None:
    """Run the jobs (every team's in turn, or `--team`'s): reminders, notices, escalations, updates and digests."""
    from .clock import FixedClock

    def sweep_team(config: Config, prefix: str) -> int:
        moment = _moment(at, config) if at else SystemClock().now()
        if dry_run:
            from .checks import check_everything
            from .models import open_database
            from .sweep import Sweeper
            _, renderer = check_everything(config)
            open_database(config.database_url, migrate=False)
            found = Sweeper(config, renderer).due(moment)
        else:
            from .daemon import Daemon
            found = Daemon(config, clock=FixedClock(moment)).sweep_once()
        when = local_time(moment, config.calendar.tz, zone=True)
        verb = "would send" if dry_run else "sent"
        click.echo(f"{prefix}sweep as of {when}: {verb} {len(found)} mail(s)")
        for due in found:
            about = config.team.ref(due.item.id) if due.item is not None else "team" \
                if due.audience == "team" else "member"
            click.echo(f"  {due.kind:<16} {about:<9} to {', '.join(due.to)}: {due.why}")
        return 0

    _each_team(ctx, sweep_team, secrets=not dry_run)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="the status as a JSON object, with `healthy` and `summary`")
@click.option("--stall", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
              help="red when the mailbox was not read for this long (default: 120)")
@click.pass_context
def health(ctx: click.Context, as_json: bool, stall: float | None) -> None:
    """Say whether the daemon takes mail (every team's, or --team's): exit 0 when it reads mail and the database
    answers, else 1."""
    import socket
    from dataclasses import asdict

    from . import health as status
    teams, now = _teams(ctx, secrets=False), datetime.now(UTC)
    everyone = {c.team.key for c in load_teams(ctx.find_root().obj, secrets=False)}  # --team's or not
    database = status.look(teams[0].database_url, everyone)
    stray = status.strays_said(database)
    workers = teams[0].database_url.startswith("postgres") and database.reachable
    held = status.holders(teams) if workers else {}
    answers = []
    for config in teams:
        path = status.status_file(config)
        found = status.read(path)
        healthy, summary = status.verdict(found, path, now, stall)
        if workers and (by_lease := status.worker_verdict(found, held.get(config.team.key), socket.gethostname())):
            healthy, summary = by_lease
        if not database.reachable and healthy:
            healthy, summary = False, f"database unreachable: {database.error}"
        answers.append((config.team.key, healthy, summary, path, found))
    healthy = all(answer[1] for answer in answers) and not stray
    if len(answers) == 1:
        _, ok, summary, path, found = answers[0]
        summary = summary if not ok or not stray else f"not healthy: {stray}"
        if as_json:
            click.echo(json.dumps({"healthy": healthy, "summary": summary, "file": str(path),
                                   **(asdict(found) if found else {}), "database": asdict(database)}, indent=2))
        else:
            click.echo("\n  ".join([summary, *status.details(found, database, now)]))
        ctx.exit(0 if healthy else 1)
    not_ok = [key for key, ok, *_ in answers if not ok] + (["mail of teams not in the configuration"] if stray else [])
    summary = f"ok: all {len(answers)} teams" if healthy else f"not healthy: {', '.join(not_ok)}"
    if as_json:
        click.echo(json.dumps({"healthy": healthy, "summary": summary, "teams": {
            key: {"healthy": ok, "summary": line, "file": str(path), **(asdict(found) if found else {})}
            for key, ok, line, path, found in answers}, "database": asdict(database)}, indent=2))
    else:
        click.echo(summary)
        for key, _, line, _, found in answers:
            click.echo("\n    ".join([f"  {key}: {line}", *status.details(found, None, now)]))
        click.echo("\n".join(f"  {line}" for line in status.details(None, database, now)))
    ctx.exit(0 if healthy else 1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="a JSON object: the live workers, and the mailboxes none holds")
@click.pass_context
def workers(ctx: click.Context, as_json: bool) -> None:
    """Which `inboxd run` worker (name, host, pid, last seen) holds which team's mailbox (PostgreSQL)."""
    from .workers import roster
    if not _teams(ctx, secrets=False)[0].database_url.startswith("postgres"):
        click.echo("SQLite: one process, `inboxd run`, serves every team; workers share mailboxes on PostgreSQL only")
        return
    teams = _open_db_all(ctx)
    seen, unwatched = roster(teams)
    if as_json:
        click.echo(json.dumps({"workers": [{"name": w.name, "host": w.host, "pid": w.pid,
                                            "started_at": _iso(w.started_at), "last_seen": _iso(w.last_seen),
                                            "teams": list(w.teams)} for w in seen],
                               "unwatched": unwatched}, indent=2))
        return
    now = datetime.now(UTC)
    click.echo(f"{'WORKER':<32} {'HOST':<20} {'PID':>7} {'LAST SEEN':>9}  TEAMS")
    for w in seen:
        ago = f"{max(0.0, (now - w.last_seen).total_seconds()):.0f} s ago"
        click.echo(f"{w.name:<32} {w.host:<20} {w.pid or '-':>7} {ago:>9}  {', '.join(w.teams) or '-'}")
    if not seen:
        click.echo("no live worker")
    if unwatched:
        click.echo(f"no worker holds: {', '.join(unwatched)}")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def backup(ctx: click.Context, file: Path) -> None:
    """Copy the SQLite database to FILE while inboxd runs (PostgreSQL: use pg_dump)."""
    from .upkeep import backup_database
    click.echo(backup_database(_config(ctx, secrets=False, any_team=True), file))  # the teams share it


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Bring the database's schema up to date; a SQLite database is backed up beside itself first."""
    from .upkeep import migrate_database
    click.echo(migrate_database(_config(ctx, secrets=False)))


def _moment(text: str, config: Config) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 moment (like 2026-12-03T15:00+01:00)",
                                 param_hint="--at") from None
    if not 1970 <= moment.year <= 9000:  # the calendar counts days forward from it: keep within datetime's range
        raise click.BadParameter(f"{text!r} is outside the years 1970 to 9000", param_hint="--at")
    return moment if moment.tzinfo else moment.replace(tzinfo=config.calendar.tz)


cli.add_command(init.command)


def _add_commands() -> None:
    from .cli_adopt import adopt, once  # they use _config above
    from .cli_stats import stats
    cli.add_command(once)
    cli.add_command(adopt)
    cli.add_command(stats)


_add_commands()


cli.add_command(auth)


def _remember_team(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta[TEAM_OPTION] = value


def _add_team_option(group: click.Group) -> None:
    """Every command that reads the config takes `--team KEY` (the reference prefix, or the team file's name)."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            _add_team_option(command)
        elif name not in ("init", "demo"):
            command.params.append(click.Option(
                ["--team"], metavar="KEY", expose_value=False, callback=_remember_team,
                help="the team (its reference prefix, or its file's name in teams.d); needed with several teams, "
                     "except by items and stats (all teams without it)"))


@cli.command()
@click.option("--html", "html_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="write the page to this file")
@click.option("--since", metavar="DATE", help="first day, like 2026-11-02 (default: a Monday 11 weeks back)")
@click.option("--until", metavar="DATE", help="last day, included (default: today)")
@click.option("--queue", help="only this queue")
@click.option("--owner", metavar="ADDRESS", help="only this owner's items")
@click.option("--at", metavar="ISO-8601", help="count as of this moment (default: now), as `stats --at`")
@click.pass_context
def report(ctx: click.Context, html_file: Path, since: str | None, until: str | None, queue: str | None,
           owner: str | None, at: str | None) -> None:
    """Write one self-contained HTML page of the figures, with charts and the late and at-risk items."""
    from .cli_stats import scope_from
    from .report import WEEKS, gather, page, week_start
    config = _open_db(ctx)
    now = _moment(at, config) if at else SystemClock().now()
    first = since or week_start(now, config, WEEKS - 1).date().isoformat()
    scope = scope_from(config, first, until, queue, owner, now.astimezone(config.calendar.tz).date())
    html_file.write_text(page(config, gather(config, scope, now), now), encoding="utf-8")
    click.echo(f"wrote {html_file}")


_add_team_option(cli)


def main() -> None:
    """Entry point of the `inboxd` console script."""
    cli(prog_name="inboxd")


if __name__ == "__main__":
    main()
