"""`inboxd demo`: the whole flow on an embedded IMAP server and SMTP capture, shown as it happens."""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid
from pathlib import Path

import click

from .clock import FixedClock, SystemClock
from .config import Config, load_config
from .daemon import Daemon
from .domain import OPEN_STATUSES
from .errors import InboxdError
from .localconfig import SHIPPED, write_local_config
from .models import Item, Outbox
from .pipeline import Outcome
from .servers import PymapServer, SmtpCapture, append_messages
from .wording import short_time

# (sender, subject, text[, extra headers])
SAMPLES: list[tuple[str, str, str] | tuple[str, str, str, dict[str, str]]] = [
    ("Rosa Lind <rosa.lind@example.org>", "Printer on floor 3 keeps jamming",
     "Hi, the printer next to the kitchen on floor 3 jams on every second page. Could someone look?"),
    ("Omar Haddad <omar.haddad@example.org>", "VPN access for our new starter",
     "Hello, Jana starts on Monday and needs VPN access and an account. Thanks!"),
    ("Mira Board <mira@board.example.org>", "Outage: email is down in the board room",
     "None of us in the board room can send or receive mail since 10:00."),
    ("Ken Ito <ken.ito@example.org>", "Question about my payroll slip",
     "My November payroll slip shows the wrong tax class. Who can fix this?"),
    ("Lea Novak <lea.novak@example.org>", "Can you set up my phone?",
     "Could you install the company mail on my personal phone? It's an older model."),
    ("Tim Berg <tim.berg@example.org>", "Out of Office: Tim Berg",
     "I am out of the office until Monday and will answer your mail then.", {"Auto-Submitted": "auto-replied"}),
    ("Ines Dahl <ines.dahl@example.org>", "New monitor for the reception desk",
     "Our reception monitor flickers; could we get a replacement?"),
]


# (who, what they write, how the narration sums it up)
CONVERSATION = [
    ("owner", "#take\n#eta +1w the new monitor is on order\nHi Ines, I will bring a spare one today.",
     "#take, a later date (#eta +1w) with the reason, and a word for Ines"),
    ("requester", "Thanks! Could the spare one be a 24 inch too?", "a question"),
    ("owner", "#done Installed the new 24 inch monitor at the reception desk.", "#done with a summary"),
    ("requester", "5", "a rating of 5"),
]


def _sample(sender: str, subject: str, text: str, headers: dict[str, str] | None = None,
            to: str = "IT Help <help@example.org>") -> bytes:
    """One sample mail as raw bytes."""
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, to, subject
    mail["Date"] = format_datetime(SystemClock().now())
    mail["Message-ID"] = make_msgid(domain="example.org")
    for name, value in (headers or {}).items():
        mail[name] = value
    mail.set_content(text)
    return mail.as_bytes()


def run_demo(keep: bool = False) -> None:
    """Start the servers, run the real daemon, drop in sample mail and narrate what happens."""
    for folder in ("rules", "templates"):
        if not (SHIPPED / folder).is_dir():
            raise InboxdError(f"the demo uses the shipped {folder}/, not found at {SHIPPED / folder}: "
                              f"the installation is incomplete; install inboxd again")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="inboxd-demo-"))
    logging.getLogger("inboxd").setLevel(logging.WARNING)  # the narration below replaces the log
    click.secho("inboxd demo: an embedded IMAP server (pymap), an SMTP capture (aiosmtpd), "
                "a temporary SQLite database", bold=True)
    imap, smtp = PymapServer(), SmtpCapture()
    try:
        with imap, smtp:
            config = load_config(write_local_config(workdir, imap.port, smtp.port, imap.user, imap.password))
            click.echo(f"  IMAP 127.0.0.1:{imap.port}   SMTP 127.0.0.1:{smtp.port}   files in {workdir}")
            click.echo(f"  rules from {config.rules_dir}, templates from {config.templates_dir}\n")
            tally = _play(Daemon(config), smtp, imap)
            _time_passes(config, smtp, tally)
            _show_server(imap)
    finally:
        if keep:
            click.echo(f"\nkept {workdir}: try `inboxd --config {workdir / 'config.toml'} items --all`")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    click.secho(f"\ndemo finished in {time.monotonic() - started:.1f} s", bold=True)


def _play(daemon: Daemon, smtp: SmtpCapture, imap: PymapServer) -> dict:
    """Run the daemon in a thread, deliver each sample into IDLE and narrate the outcome."""
    outcomes: queue.Queue[Outcome] = queue.Queue()
    daemon.listeners.append(outcomes.put)
    thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    thread.start()
    tally: dict = {"items": 0, "skipped": [], "sent": 0, "seen": 0}

    def deliver(raw: bytes) -> None:
        arrived = time.monotonic()
        append_messages(imap, [raw])
        _narrate(outcomes.get(timeout=30), time.monotonic() - arrived, tally)
        _show_sent(smtp, tally)

    try:
        for number, (sender, subject, text, *extra) in enumerate(SAMPLES, start=1):
            click.secho(f"[{number}] {sender} writes: \"{subject}\"", fg="cyan")
            deliver(_sample(sender, subject, text, extra[0] if extra else None))
        _conversation(smtp, deliver)
    finally:
        daemon.stop()
        thread.join(timeout=30)
    _summary(daemon, tally)
    return tally


def _time_passes(config: Config, smtp: SmtpCapture, tally: dict) -> None:
    """Time runs on to the first promised date: the owner is reminded, the requester told, the lead alerted."""
    first = Item.select().where(Item.status.in_(OPEN_STATUSES)).order_by(Item.due_at).first()
    if first is None:
        return
    tz, ref = config.calendar.tz, config.team.ref(first.id)
    for moment, what in ((first.due_at - timedelta(minutes=30), f"half an hour before {ref} is due"),
                         (first.due_at + timedelta(minutes=5), f"{ref}'s promised date has passed")):
        local = moment.astimezone(tz)
        click.secho(f"\nTime passes to {short_time(local, tz)}, {what}: the jobs run as the daemon runs them every "
                    f"minute (`inboxd sweep --at {local.isoformat(timespec='minutes')} --dry-run` shows the same)",
                    bold=True)
        for due in Daemon(config, clock=FixedClock(moment)).sweep_once():
            about = config.team.ref(due.item.id) if due.item is not None else "weekly"
            click.echo(f"    {due.kind.replace('_', ' '):<16} {about:<6} to {', '.join(due.to)}: {due.why}")
        _show_sent(smtp, tally)


def _conversation(smtp: SmtpCapture, deliver: Callable[[bytes], None]) -> None:
    """The last request, which nobody owns yet, is taken and settled by mail only."""
    item = Item.select().order_by(Item.id.desc()).get()
    tag, owner, requester = f"[IT-{item.id}]", "ana@example.org", item.requester
    click.secho(f"\nA conversation by mail only: {owner} got \"New request\" for IT-{item.id} and answers it",
                bold=True)
    for who, text, words in CONVERSATION:
        sender = owner if who == "owner" else requester
        click.secho(f"[{who}] {sender} replies: {words}", fg="cyan")
        deliver(_reply(_last_mail_to(smtp, sender, tag), sender, text))


def _last_mail_to(smtp: SmtpCapture, address: str, tag: str) -> Message:
    """The latest mail inboxd sent to this address about one item, to reply to."""
    mails = (message_from_bytes(m.data) for m in reversed(smtp.messages) if address in m.rcpt_tos)
    return next(m for m in mails if tag in str(make_header(decode_header(m["Subject"] or ""))))


def _reply(to: Message, sender: str, text: str) -> bytes:
    """A reply as a mail client writes it: to the Reply-To (a member's own address for the item), Re: subject,
    threading headers, the original quoted."""
    quoted = "\n".join("> " + line for line in _text(to).splitlines())
    subject = str(make_header(decode_header(to["Subject"] or "")))
    return _sample(sender, f"Re: {subject}", f"{text}\n\nOn {to['Date']}, IT Help wrote:\n{quoted}\n",
                   {"In-Reply-To": to["Message-ID"], "References": to["Message-ID"]},
                   to=to["Reply-To"] or "IT Help <help@example.org>")


def _text(mail: Message) -> str:
    part = next(p for p in mail.walk() if p.get_content_type() == "text/plain")
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes), "a single text/plain part decodes to bytes"
    return payload.decode("utf-8", "replace")


def _narrate(outcome: Outcome, latency: float, tally: dict) -> None:
    """One line on what became of a mail and how long it took."""
    if outcome.kind == "item":
        tally["items"] += 1
        click.echo(f"    -> item {outcome.ref} created after {latency:.2f} s: {outcome.reason}")
    elif outcome.ref:
        click.echo(f"    -> {outcome.ref}, {outcome.kind} after {latency:.2f} s: {outcome.reason}")
    else:
        if outcome.kind in ("skipped", "ignored", "parked"):
            tally["skipped"].append((outcome.subject, outcome.reason))
        click.echo(f"    -> {outcome.kind} after {latency:.2f} s: {outcome.reason}")


def _show_sent(smtp: SmtpCapture, tally: dict) -> None:
    """Print the mails the capture received since the last call, once the outbox is empty."""
    deadline = time.monotonic() + 10
    while Outbox.select().where(Outbox.status == "pending").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    expected = Outbox.select().where(Outbox.status == "sent").count()
    smtp.wait_for(expected, timeout=10)
    for mail in smtp.messages[tally["seen"]:]:
        subject = " ".join(str(make_header(decode_header(message_from_bytes(mail.data)["Subject"] or ""))).split())
        click.echo(f"    <- mail to {', '.join(mail.rcpt_tos)}: {subject}")
        tally["sent"] += 1
    tally["seen"] = len(smtp.messages)


def _summary(daemon: Daemon, tally: dict) -> None:
    """The items as the tracker now has them, and what was not answered."""
    team, tz = daemon.config.team, daemon.config.calendar.tz
    click.secho(f"\n{tally['items']} item(s) tracked, {tally['sent']} mail(s) sent, "
                f"{len(tally['skipped'])} mail(s) stored without an answer", bold=True)
    for item in Item.select().order_by(Item.id):
        due = short_time(item.due_at, tz)
        click.echo(f"  {team.ref(item.id):<7} {item.queue:<11} {item.priority:<7} owner "
                   f"{item.owner or '-':<16} due {due}  {item.subject}")
    for subject, reason in tally["skipped"]:
        click.echo(f"  not answered: \"{subject}\" ({reason})")


def _show_server(imap: PymapServer) -> None:
    """What the mailbox looks like now, read back from the server."""
    with imap.connect() as client:
        counts = {f: client.folder_status(f, [b"MESSAGES"])[b"MESSAGES"] for f in ("INBOX", "Processed")}
    click.echo(f"  on the IMAP server: {counts['Processed']} mail(s) moved to Processed after their "
               f"outcome was committed, {counts['INBOX']} left in INBOX")
