"""The outbox: mail is enqueued inside the caller's transaction and sent later, with retries.

It keeps its own table; what a delivery means for an item (acknowledged, refused, given up)
it reports through the tracker, the one writer of items and their history.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from contextvars import copy_context
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import peewee as pw

from . import metrics
from .clock import Clock
from .config import SmtpConfig, TeamConfig
from .errors import DatabaseOutage, DeliveryError, PermanentDeliveryError, SmtpLoginRefused, SmtpUnreachable
from .mailout import OutgoingMail
from .models import (
    Message,
    Outbox,
    composed,
    create,
    db,
    forget_connection,
    outage,
    team,
    use_team,
    write_transaction,
)
from .oauth2 import HttpTokens, TokenError, TokenSource
from .sentlog import SentLog
from .tracker import Silences, Tracker

log = logging.getLogger(__name__)
# With the sent log holding each delivery the moment the server takes it, the database record
# can follow for a few at once: a write turn per mail cost the intake and the sending alike.
RECORD_BATCH = 50
RECORD_SECONDS = 0.1
# At stop, a worker's delivery sends what is due for this long, then leaves the rest in the outbox, where the other
# workers' deliveries (or its next start) send it: a backlog of thousands would outlast systemd's TimeoutStopSec.
STOP_DRAIN_SECONDS = 30.0
LOGIN_ATTEMPTS = 3  # logins refused in a row (IMAP or SMTP) before `run` stops: more would risk a lockout


def enqueue(mail: OutgoingMail, item_id: int | None, now: datetime) -> Outbox:
    """Store an outgoing mail; call inside the transaction that decided to send it."""
    create(Message, message_id=mail.message_id, direction="out", item=item_id, sender=mail.sender,
           subject=mail.subject, raw_size=len(mail.raw), outcome=mail.kind, body=mail.text, created_at=now)
    return create(Outbox, item=item_id, kind=mail.kind, recipients=list(mail.to), sender=mail.sender,
                  subject=mail.subject, message_id=mail.message_id, raw=mail.raw, acknowledges=mail.acknowledges,
                  recipient=mail.to[0].lower() if mail.to else "", automatic=mail.automatic,
                  next_attempt_at=now, created_at=now)


def _mark_sent(row: Outbox, not_for: str, now: datetime, silences: Silences | None) -> None:
    """The row is sent and its item told, inside the caller's transaction; the SQL is composed once (per mail)."""
    sql = composed("mark_sent", lambda: Outbox.update(status="sent", attempts=Outbox.attempts + 1, last_error="",
                                                       sent_at=now).where(Outbox.id == 0))
    db.execute_sql(sql, ["sent", 1, f"refused for {not_for}" if not_for else "", Outbox.sent_at.db_value(now), row.id])
    Tracker.delivered(row.item_id, row.acknowledges, not_for, row.kind, now)
    if silences is not None and row.item_id and row.recipient:
        silences.heard(row.item_id, row.recipient, now)


class Transport(Protocol):
    """Hands one mail to a mail server."""

    def send(self, sender: str, recipients: list[str], raw: bytes) -> dict[str, str]:
        """Deliver, and return the recipients the server refused while it took the mail for the others.

        Raises DeliveryError (try again later) or PermanentDeliveryError (give up).
        """
        ...

    def close(self) -> None:
        """Let go of any connection."""
        ...


class SmtpTransport:
    """SMTP with one reused connection: TLS, STARTTLS or plain to localhost, optional login."""

    def __init__(self, config: SmtpConfig, tokens: TokenSource | None = None) -> None:
        self.config = config
        self.tokens = tokens or (HttpTokens(config.oauth2) if config.oauth2 else None)
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        context = ssl.create_default_context(cafile=cfg.ca_file)  # certificates are always verified
        smtp = (smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_seconds, context=context)
                if cfg.tls == "ssl" else smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_seconds))
        try:
            if cfg.tls == "starttls":
                smtp.starttls(context=context)
            self._login(smtp)
        except BaseException:
            smtp.close()  # don't leave a half-open session behind
            raise
        return smtp

    def check(self) -> str:
        """Connect and log in, sending nothing (`inboxd check --connect`); what was found, or DeliveryError."""
        cfg = self.config
        try:
            self._connect().quit()
        except (smtplib.SMTPException, OSError) as exc:
            raise type(_classify(exc))(f"SMTP: {cfg.host}:{cfg.port} ({cfg.tls}): {_classify(exc)}") from None
        how = "OAuth2, XOAUTH2" if self.tokens else "password" if cfg.user and cfg.password else "no login"
        who = f"logged in as {cfg.user!r}" if cfg.user and how != "no login" else "connected"
        return f"{who} on {cfg.host}:{cfg.port} ({cfg.tls}, {how}); nothing sent"

    def _login(self, smtp: smtplib.SMTP) -> None:
        """With the password, or `AUTH XOAUTH2` with an OAuth2 token; a refusal is SmtpLoginRefused."""
        cfg = self.config
        try:
            if self.tokens is not None and cfg.user:
                smtp.ehlo_or_helo_if_needed()
                token = self.tokens.token()
                smtp.auth("XOAUTH2", lambda challenge=None: f"user={cfg.user}\1auth=Bearer {token}\1\1"
                          if challenge is None else "")  # after an error challenge, an empty answer ends it
            elif cfg.user and cfg.password:
                smtp.login(cfg.user, cfg.password.value)
        except smtplib.SMTPAuthenticationError as exc:
            if self.tokens is not None:
                self.tokens.invalidate()  # expired or revoked early: the next try fetches a new one
            raise SmtpLoginRefused(f"SMTP: login as {cfg.user!r} on {cfg.host}:{cfg.port} was refused: "
                                   f"{exc.smtp_code} {_decoded(exc.smtp_error)}") from None
        except TokenError as exc:
            raise (SmtpLoginRefused if exc.refused else SmtpUnreachable)(f"SMTP: no login: {exc}") from None

    def send(self, sender: str, recipients: list[str], raw: bytes) -> dict[str, str]:
        reused = self._smtp is not None
        try:
            if self._smtp is None:
                self._smtp = self._connect()
            refused = self._smtp.sendmail(sender, recipients, raw, mail_options=self._options(sender, recipients))
        except smtplib.SMTPServerDisconnected as exc:
            self._smtp = None
            if reused:  # the server dropped an idle connection: one fresh try
                return self.send(sender, recipients, raw)
            raise _classify(exc) from None
        except (smtplib.SMTPException, OSError) as exc:
            if not isinstance(exc, smtplib.SMTPResponseException):
                self.close()  # a refusal leaves the session usable; anything else may not
            raise _classify(exc) from None
        return {address: f"{code} {_decoded(text)}" for address, (code, text) in refused.items()}

    def _options(self, sender: str, recipients: list[str]) -> list[str]:
        """SMTPUTF8 for an address like jöhn@exämple.org, if the server takes it; else it can never go."""
        if all(address.isascii() for address in (sender, *recipients)):
            return []
        assert self._smtp is not None
        self._smtp.ehlo_or_helo_if_needed()
        if not self._smtp.has_extn("smtputf8"):
            raise PermanentDeliveryError("the SMTP server does not take internationalized addresses (no SMTPUTF8)")
        return ["SMTPUTF8"]

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._smtp = None


def _classify(exc: Exception) -> DeliveryError:
    """5xx answers are permanent; everything else (4xx, network) is worth retrying."""
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [c for c, _ in exc.recipients.values()]
        code = min(codes) if codes else None
    if code and 500 <= code < 600:
        return PermanentDeliveryError(f"{code} {_text(exc)}")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return SmtpUnreachable("timed out talking to the SMTP server")
    if code:
        return DeliveryError(f"{code} {_text(exc)}")
    unreachable = isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError)) or \
        not isinstance(exc, smtplib.SMTPException)  # a socket error; SMTPException is an OSError too
    return (SmtpUnreachable if unreachable else DeliveryError)(f"{type(exc).__name__}: {exc}")


def _text(exc: Exception) -> str:
    error = getattr(exc, "smtp_error", None)
    return _decoded(error) if error is not None else str(exc)


def _decoded(text: bytes | str) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


@dataclass
class FakeTransport:
    """Keeps what it is asked to send; can be told to fail. For unit tests."""

    sent: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    failures: list[DeliveryError] = field(default_factory=list)

    def send(self, sender: str, recipients: list[str], raw: bytes) -> dict[str, str]:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((sender, recipients, raw))
        return {}

    def close(self) -> None:
        pass


class Report(Protocol):
    """Where the sender tells what became of each try: the daemon's ledger, or a pipe to it from delivery."""

    def sent(self, row_id: int, kind: str, ack_wait: float | None, not_for: str) -> None:
        """The server took the mail (refused for `not_for`); `ack_wait`: an acknowledgement's seconds in the outbox."""
        ...

    def failed(self, row_id: int, kind: str, why: str, final: bool) -> None:
        """A try failed; `final`: given up on."""
        ...

    def login(self, why: str, ok: bool) -> None:
        """The SMTP login was refused (`why`), or (`ok`) mail goes again."""
        ...


class Ledger:
    """What the daemon keeps of deliveries: the metrics, the mail not delivered to everyone, refused logins."""

    def __init__(self) -> None:
        self.undelivered: dict[int, str] = {}  # outbox id -> why, of mail tried and not delivered to everyone
        self.on_login_refused: Callable[[str, bool], None] = lambda why, ok: None  # (why, False) per refusal;
        # ("", True) once mail goes again

    def sent(self, row_id: int, kind: str, ack_wait: float | None, not_for: str) -> None:
        metrics.sent(kind, ack_wait)
        if not_for:
            self.undelivered[row_id] = f"refused for {not_for}"
        else:
            self.undelivered.pop(row_id, None)

    def failed(self, row_id: int, kind: str, why: str, final: bool) -> None:
        metrics.failed(kind, final)
        self.undelivered[row_id] = why

    def login(self, why: str, ok: bool) -> None:
        self.on_login_refused(why, ok)


class OutboxSender:
    """Sends due outbox mail over one or more connections; backs off and gives up into `dead`.

    On SQLite each connection owns a share of the rows (id % connections) and what the server took is
    noted in the sent log, then recorded a few at once. On PostgreSQL each mail is claimed under a row lock
    (`FOR UPDATE SKIP LOCKED`), sent, and recorded in that transaction: any number of senders, in any
    number of processes, drain one outbox, and a mail one of them is sending is skipped by the others.
    """

    def __init__(self, transports: list[Transport], clock: Clock, config: SmtpConfig,
                 team: TeamConfig | None = None, report: Report | None = None,
                 silences: Silences | None = None, sent_log_name: str = "sent",
                 crew: Mapping[str, OutboxSender] | None = None) -> None:
        """`crew` (PostgreSQL): the senders, by team, whose mail this one's threads claim, each sent with its
        own team's SMTP (a worker's delivery sends every team's); a crew's lead needs no transports of its own."""
        self.transports, self.clock, self.config = transports, clock, config
        self.team, self.silences = team, silences  # silences: the requester's word from us is noted as it leaves
        self.report: Report = report or Ledger()
        self.unreachable = False  # since the last failure to reach the server; logged once per outage
        self.database_down = False  # since the database was last found unavailable; logged once per outage
        self.login_refused = False  # the last try ended in a refused login
        self.outages = 0  # tries in a row that could not reach the server
        self.refusals = 0  # logins refused in a row; PostgreSQL: at LOGIN_ATTEMPTS this team's mail is not claimed
        self.taken: dict[str, tuple[str, datetime]] = {}  # PostgreSQL: message id -> (refused for, when) of mail
        # the server took, till its claim's transaction commits
        self.rests_until: datetime | None = None  # then (PostgreSQL): this team's mail is not claimed till then
        self.stopping = threading.Event()  # `run`'s stop: a delivery waiting to be recorded gives up then
        self.crew: Mapping[str, OutboxSender] = crew or {}  # empty: this thread's team's mail, sent by this one
        self.wakes = [threading.Event() for _ in range(self.connections())]
        self._sent_log: SentLog | None = None
        self._sent_log_name = sent_log_name  # beside the database file: one per team when teams share it
        self._settling, self._settled = threading.Lock(), False
        self._stopping_since: float | None = None  # time.monotonic() when a claiming drain first saw the stop
        self._left_said = False

    @property
    def transport(self) -> Transport:
        """The first connection: the one `drain` uses."""
        return self.transports[0]

    def notify(self) -> None:
        """New mail is in the outbox."""
        for wake in self.wakes:
            wake.set()

    def backoff(self, attempts: int) -> timedelta:
        """30 s, 1 min, 2 min, ... capped at max_retry_seconds."""
        seconds = self.config.retry_seconds * 2 ** max(attempts - 1, 0)
        return timedelta(seconds=min(seconds, self.config.max_retry_seconds))

    def due(self, share: int = 0, shares: int = 1, limit: int = 100) -> list[Outbox]:
        """This team's pending mail whose time has come (its SMTP is the team's), oldest first; connection `share`
        of `shares` takes id % shares."""
        query = Outbox.select().where((Outbox.team == team()) & (Outbox.status == "pending")
                                      & (Outbox.next_attempt_at <= self.clock.now()))
        if shares > 1:  # each connection owns its rows, so no mail is ever sent by two of them
            query = query.where(Outbox.id % shares == share)
        return list(query.order_by(Outbox.id).limit(limit))

    @property
    def claims(self) -> bool:
        """Mail is claimed row by row under a lock (PostgreSQL), not shared out by id (SQLite)."""
        return isinstance(db.obj, pw.PostgresqlDatabase)

    def _senders(self) -> Mapping[str, OutboxSender]:
        return self.crew or {team(): self}

    def connections(self) -> int:
        """How many threads `run` starts: one per connection (of the team with the most, for a crew)."""
        return max(len(sender.transports) for sender in self.crew.values()) if self.crew else len(self.transports)

    def drain(self, share: int = 0, shares: int = 1) -> int:
        """Send everything due now (of one share); the number of mails sent."""
        if self.claims:
            return self._drain_claiming(share)
        self.settle()
        transport, sent = self.transports[share if shares > 1 else 0], 0
        later: list[tuple[Outbox, str]] = []  # sent, in the sent log, to be recorded together
        try:
            while True:
                batch = self.due(share, shares)
                if not batch:
                    return sent
                progressed, since = False, time.monotonic()
                for row in batch:
                    if self._send(row, transport, later):
                        sent += 1
                        progressed = True
                    elif self.unreachable:
                        return sent  # the others would only fail the same way; they wait their turn
                    if len(later) >= RECORD_BATCH or (later and time.monotonic() - since >= RECORD_SECONDS):
                        self._record_all(later)
                        since = time.monotonic()
                self._record_all(later)
                if not progressed:
                    return sent
        finally:
            self._record_all(later)

    def _drain_claiming(self, share: int) -> int:
        """PostgreSQL: one mail at a time, each claimed, sent and recorded in a transaction of its own.

        Connection `share` sends for the teams that have that many; a team whose server cannot be reached
        waits its turn, and a mail that failed is not tried again in this drain.
        """
        senders = {key: sender for key, sender in self._senders().items() if share < len(sender.transports)
                   and not (sender.login_refused and self.stopping.is_set())  # at stop, no login after a refusal
                   and not sender.resting() and sender.refusals < LOGIN_ATTEMPTS}
        sent, failed = 0, set[int]()  # the rows that failed in this drain: not tried again in it
        served = set[str]()  # the teams given a mail in this round: the others' come first
        while senders:
            if self.stopping.is_set() and self._stop_time_over():
                return sent
            row: Outbox | None = None
            try:
                with write_transaction(turn=False):  # PostgreSQL's writers wait on rows, not on a turn
                    row = self._claim(list(senders), failed, served)
                    if row is None:
                        return sent
                    served = {row.team} if row.team in served else served | {row.team}
                    sender = senders[row.team]
                    use_team(row.team)  # its item's history and silences are its team's
                    if sender._send(row, sender.transports[share], None, claimed=True):
                        sent += 1
                    else:
                        failed.add(row.id)
                        if sender.unreachable:
                            del senders[row.team]
            except Exception:
                if row is not None and row.message_id in self._senders()[row.team].taken:
                    log.error("%s: the SMTP server took %s to %s, but the database session ended before it was "
                              "recorded (a send longer than idle_in_transaction_session_timeout, a fence, the "
                              "database lost): it is pending again; this process records it when it claims it "
                              "again, another worker may send it once more", self._label(row), row.message_id,
                              ", ".join(row.recipients))
                raise
            self._senders()[row.team].taken.pop(row.message_id, None)  # committed
        return sent

    def _claim(self, teams: list[str], failed: set[int], served: set[str]) -> Outbox | None:
        """The oldest due mail of these teams that no other sender holds, locked until this transaction ends; of a
        team not `served` yet in this round if there is one (the teams take turns: a team with thousands waiting
        does not hold up another's acknowledgement)."""
        others = [key for key in teams if key not in served]
        if served and others:  # a query of their own: ordering every due row by team would sort them all
            row = self._oldest(others, failed)
            if row is not None:
                return row
        return self._oldest(teams, failed)

    def _oldest(self, teams: list[str], failed: set[int]) -> Outbox | None:
        query = Outbox.select().where(Outbox.team.in_(teams) & (Outbox.status == "pending")
                                      & (Outbox.next_attempt_at <= self.clock.now()))
        if failed:
            query = query.where(Outbox.id.not_in(list(failed)))
        return query.order_by(Outbox.id).limit(1).for_update(skip_locked=True).first()

    def _stop_time_over(self) -> bool:
        """Stopping for longer than STOP_DRAIN_SECONDS (said once): what is still due stays in the outbox."""
        now = time.monotonic()
        if self._stopping_since is None:
            self._stopping_since = now
        over = now - self._stopping_since > STOP_DRAIN_SECONDS
        if over and not self._left_said:
            self._left_said = True
            log.warning("outbox: stopping after %.0f s of sending; the mail still due stays in the outbox, for the "
                        "other workers' delivery or the next start", STOP_DRAIN_SECONDS)
        return over

    def resting(self) -> bool:
        """This team's server could not be reached a moment ago: its mail is not claimed until its retry time."""
        return self.rests_until is not None and self.clock.now() < self.rests_until

    def last_drain(self) -> int:
        """At stop, what is due; not after a refused login (another try would risk locking the account), and
        with the database unavailable what waits to be recorded waits for the next start."""
        if self.login_refused:
            return 0
        try:
            return self.drain()
        except Exception as exc:
            why = outage(exc)
            if why is None:
                raise
            forget_connection()
            log.warning("outbox: stopping with the database unavailable (%s); %s", why,
                        "what the SMTP server took is in the sent log and is recorded at the next start"
                        if self.sent_log else "a mail taken, not recorded yet, may go out once more at the next start")
            return 0

    def send_one(self, row: Outbox, transport: Transport | None = None) -> bool:
        """Try one mail and record the result at once, so a crash repeats at most this one."""
        return self._send(row, transport, None)

    def _send(self, row: Outbox, transport: Transport | None, later: list[tuple[Outbox, str]] | None,
              claimed: bool = False) -> bool:
        """Try one mail; what the server took is recorded at once, or with `later` once the sent log has it;
        `claimed`: in the transaction holding its row's lock (PostgreSQL)."""
        sent_log = self.sent_log
        if sent_log is not None and row.message_id in sent_log.unrecorded:  # taken, not recorded: no resend
            self._record_all([(row, sent_log.unrecorded[row.message_id])])
            return True
        if claimed and row.message_id in self.taken:  # taken, its record lost with the session: no resend
            not_for, left = self.taken[row.message_id]
            _mark_sent(row, not_for, left, self.silences)
            log.warning("%s: %s recorded as sent (the SMTP server took it at %s), not sent again", self._label(row),
                        row.message_id, left.isoformat(timespec="seconds"))
            return True
        try:
            refused = (transport or self.transport).send(row.sender, list(row.recipients), bytes(row.raw))
        except DeliveryError as exc:
            self._failed(row, exc, claimed)
            return False
        except Exception as exc:  # a transport bug must cost this mail an attempt, not stall the outbox
            log.exception("%s: unexpected error sending %s", self._label(row), row.kind)
            self._failed(row, DeliveryError(f"{type(exc).__name__}: {exc}"), claimed)
            return False
        # Taken for the others, so never sent again: the refused ones are noted on the item.
        not_for = "; ".join(f"{address}: {why}" for address, why in refused.items())
        if sent_log is not None:
            # First of all: from here a crash no longer sends it twice (and the next start knows when it left).
            sent_log.note(row.message_id, not_for, self.clock.now())
        if sent_log is not None and later is not None:
            later.append((row, not_for))  # a write turn per mail cost the intake and the sending alike
        elif claimed:
            self.taken[row.message_id] = (not_for, self.clock.now())  # till the commit: it may fail
            _mark_sent(row, not_for, self.clock.now(), self.silences)  # committed with the claim, lock and all
        else:
            self._record_all([(row, not_for)])
        wait = max(0.0, (self.clock.now() - row.created_at).total_seconds()) if row.acknowledges else None
        self.report.sent(row.id, row.kind, wait, not_for)
        self.login_refused, self.outages, self.refusals, self.rests_until = False, 0, 0, None
        if self.unreachable:
            self.unreachable = False
            self.report.login("", True)
            log.info("SMTP: %s:%s is reachable again; sending what waited", self.config.host, self.config.port)
        if not_for:
            log.error("%s: %s was refused for %s", self._label(row), row.kind, not_for)
        log.info("%s: sent %s to %s: %s", self._label(row), row.kind, ", ".join(row.recipients), row.subject)
        return True

    def _record_all(self, later: list[tuple[Outbox, str]]) -> None:
        """Record these mails the server took, in one transaction; then the sent log may forget them."""
        if not later:
            return
        now, sent_log = self.clock.now(), self.sent_log

        def record() -> None:
            for row, not_for in later:
                _mark_sent(row, not_for, now, self.silences)
        self._record_delivery(record)
        if sent_log is not None:
            for row, _ in later:
                sent_log.recorded(row.message_id)
        later.clear()

    @property
    def sent_log(self) -> SentLog | None:
        """The sent log beside a SQLite database file (PostgreSQL: none, the delivery waits its turn)."""
        if self._sent_log is None:
            database = db.obj
            if isinstance(database, pw.SqliteDatabase) and database.database not in ("", ":memory:"):
                self._sent_log = SentLog(Path(f"{database.database}.{self._sent_log_name}"))
        return self._sent_log

    def settle(self) -> int:
        """Before sending anything: what the sent log says the server took is recorded, never sent again.

        The log under the config's other shape is read too (`inboxd.db.sent` of a lone config, `inboxd.db.IT.sent`
        of team IT in teams.d): a crash just before a move to teams.d or back would otherwise send its mail again.
        """
        with self._settling:
            sent_log, count = self.sent_log, 0
            if self._settled or sent_log is None:
                return 0
            former = self._former_log(sent_log)
            taken = (former.taken() if former else {}) | sent_log.taken()
            if taken:
                now = self.clock.now()
                with write_transaction():
                    pending = Outbox.select().where(Outbox.message_id.in_(list(taken)) & (Outbox.status == "pending"))
                    for row in pending:  # when it left, not now: an acknowledgement, a silence are timed by it
                        refused, left = taken[row.message_id]
                        _mark_sent(row, refused, left or now, self.silences)
                        count += 1
                if count:
                    log.warning("outbox: %d mail(s) the SMTP server took before the last stop were not recorded "
                                "yet; recorded now from %s, not sent again", count, sent_log.path)
            sent_log.clear()
            if former is not None:
                former.path.unlink(missing_ok=True)
            self._settled = True
            return count

    def _former_log(self, sent_log: SentLog) -> SentLog | None:
        """The sent log this team's mail was noted in under the config's other shape, if it is there."""
        if self.team is None:
            return None
        own = f".{self._sent_log_name}"
        base = str(sent_log.path)[:-len(own)]
        path = Path(base + (f".{self.team.key}.sent" if self._sent_log_name == "sent" else ".sent"))
        return SentLog(path) if path.is_file() else None

    def _record_delivery(self, record: Callable[[], None]) -> None:
        """Write what the server took; while the database is unavailable wait, rather than send the mail twice."""
        backoff = 1.0
        while True:
            try:
                with write_transaction():
                    record()
                return
            except DatabaseOutage as exc:
                if self.stopping.is_set():
                    raise  # stopping: like a crash here, the mail may go out once more
                self._database_unavailable(str(exc))
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _database_unavailable(self, why: str) -> None:
        (log.debug if self.database_down else log.warning)("outbox: %s; mail waits in the outbox", why)
        self.database_down = True

    def _failed(self, row: Outbox, exc: DeliveryError, claimed: bool = False) -> None:
        attempts = row.attempts + 1
        now = self.clock.now()
        # A refused login is the credentials' fault, not the mail's: it waits for them to be fixed.
        dead = (isinstance(exc, PermanentDeliveryError) or attempts >= self.config.max_attempts) and \
            not isinstance(exc, SmtpLoginRefused)
        self.report.failed(row.id, row.kind, str(exc), dead)
        with nullcontext() if claimed else write_transaction():
            Outbox.update(attempts=attempts, last_error=str(exc), status="dead" if dead else "pending",
                          next_attempt_at=now + self.backoff(attempts)).where(Outbox.id == row.id).execute()
            if dead:
                Tracker.given_up(row.item_id, f"{row.kind} to {', '.join(row.recipients)} given up after "
                                              f"{attempts} attempt(s): {exc}", now)
        if dead:
            log.error("%s: gave up sending %s to %s after %d attempt(s): %s", self._label(row), row.kind,
                      ", ".join(row.recipients), attempts, exc)
        elif isinstance(exc, SmtpLoginRefused):
            self.report.login(f"{exc}; mail waits in the outbox", False)  # logs it; repeated, `run` stops
        elif exc.unreachable:
            # One line per outage, not one per mail and retry.
            (log.debug if self.unreachable else log.error)(
                "SMTP: cannot reach %s:%s (%s); mail waits in the outbox and is retried with backoff",
                self.config.host, self.config.port, exc)
        else:
            log.warning("%s: could not send %s to %s (attempt %d, retry in %s): %s", self._label(row),
                        row.kind, ", ".join(row.recipients), attempts, self.backoff(attempts), exc)
        self.unreachable = exc.unreachable
        self.login_refused = isinstance(exc, SmtpLoginRefused)
        # In a worker's delivery a blackholed server costs every team's mail its timeout at each try: it rests,
        # longer at each try, at most 10 timeouts (so that the others wait at most a tenth of the time).
        self.outages = self.outages + 1 if exc.unreachable else 0
        self.refusals = self.refusals + 1 if isinstance(exc, SmtpLoginRefused) else 0 if not exc.unreachable \
            else self.refusals  # a failure after the login: it was taken
        if self.refusals == LOGIN_ATTEMPTS and self.claims:
            # Every worker's delivery logs in to every team's SMTP: the team's daemon stopping is not enough.
            log.error("SMTP: team %s's SMTP login was refused %d times in a row: this delivery no longer sends "
                      "its mail, which waits in the outbox (fix the credentials, try them with `inboxd check "
                      "--connect`, then restart the workers)", self.team.key if self.team else team(), self.refusals)
        self.rests_until = now + min(self.backoff(self.outages), timedelta(seconds=10 * self.config.timeout_seconds)) \
            if exc.unreachable else None

    def _label(self, row: Outbox) -> str:
        """The item's ref for log lines; mail about no item (declines, redirects) says so."""
        if not row.item_id:
            return "no item"
        return self.team.ref(row.item_id) if self.team else f"item {row.item_id}"

    def serve(self, stop: threading.Event) -> None:
        """Send until `stop`, then once more what is due (the last batch's mail), and let go of the connections."""
        self.run(stop)
        self.last_drain()
        for sender in self._senders().values():
            for transport in sender.transports:
                transport.close()

    def run(self, stop: threading.Event) -> None:
        """One worker per connection until `stop`; then the caller drains what is left."""
        self.stopping = stop
        workers = [threading.Thread(target=copy_context().run, args=(self._work, n, stop), name=f"outbox-{n}",
                                    daemon=True)  # each works for this thread's team
                   for n in range(self.connections())]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def _work(self, share: int, stop: threading.Event, idle_seconds: float = 5.0) -> None:
        """Drain this connection's share whenever woken, or every few seconds for retries."""
        wake = self.wakes[share]
        while not stop.is_set():
            wake.clear()  # before draining: a notify() from now on is not lost
            try:
                self.drain(share, self.connections())
                self.database_down = False
            except Exception as exc:  # keep the sender alive: the rows stay and are tried again
                why = outage(exc)
                if why is not None:
                    forget_connection()  # a read may have failed, outside any write: the server may be gone
                    self._database_unavailable(f"database unavailable: {why}")
                else:
                    log.exception("outbox: unexpected error while sending; will retry")
            wake.wait(idle_seconds)
        for sender in self._senders().values():
            if share < len(sender.transports):
                sender.transports[share].close()
