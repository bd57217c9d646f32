"""The daemon: the loop around source, pipeline and outbox; IDLE, reconnects, reload, stop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import schedule

from . import http, metrics
from .adopt import ALL, NOW, Adoption, FirstContact, Found, adoption, first_contact_message, left_alone
from .checks import check_everything, security_warnings
from .clock import Clock, SystemClock
from .config import Config
from .delivery import Delivery, ProcessDelivery, ThreadDelivery, apart_possible
from .domain import Reply
from .errors import DatabaseOutage, InboxdError, LoginRefused, LoginsRefused, SourceError, SourceHiccup
from .health import Health, status_file
from .instance import InstanceLock
from .leases import LeaseLost
from .models import (
    LATEST_SCHEMA,
    MailboxState,
    forget_connection,
    open_database,
    outage,
    schema_version_of,
    seen_inbound,
    use_team,
    write_transaction,
)
from .oauth2 import token_sources
from .outbox import LOGIN_ATTEMPTS, Ledger, OutboxSender, SmtpTransport, Transport, enqueue
from .pipeline import Outcome, Pipeline
from .source import FETCH_BUDGET, IDLE_RENEW_SECONDS, Fetched, ImapSource, MailSource, by_budget
from .sweep import Due, Sweeper
from .systemd import Notifier, TeamNotifier
from .tracker import Silences
from .upkeep import adopt_old_rows, migrate_database

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 60
SWEEP_SECONDS = 60  # how often the jobs ask what is due: reminders and notices go out within a minute
FETCH_ATTEMPTS = 3  # a mail the server fails to hand over this often, each time on a new connection, is set aside
NO_REQUEST = {"subject": "", "sender": "", "sender_name": "", "summary": "", "text": "", "attachments": []}
DATABASE_RETRY_SECONDS = 30.0  # the longest wait between tries while the database is busy, locked, full or down
ONCE_PATIENCE_SECONDS = 300.0  # how long `inboxd once` waits for an unavailable database before it gives up


class Daemon:
    """Watches one mailbox: every new mail through the pipeline, then marked done; sends the outbox."""

    def __init__(self, config: Config, clock: Clock | None = None, source: MailSource | None = None,
                 transport: Transport | None = None, database_open: bool = False) -> None:
        """`database_open`: this process has the database open and migrated already (a worker starting a team
        while others run: opening it again would rebind the models under their transactions)."""
        self.config = config
        self.clock = clock or SystemClock()
        rules, renderer = check_everything(config)  # a broken template fails here, not at 3 a.m.
        for warning in security_warnings(config):
            log.warning("%s", warning)
        if not database_open:
            if schema_version_of(config.database_url) < LATEST_SCHEMA:
                log.info("%s", migrate_database(config))  # only while no other inboxd works on it, backed up first
            open_database(config.database_url)
            adopt_old_rows(config)
        use_team(config.team.key)  # each entry point (once, run, ingest, sweep) says it again: a thread may be new
        imap_tokens, smtp_tokens = token_sources(config.mailbox.oauth2, config.smtp.oauth2)
        self.source = source or ImapSource(config.mailbox, config.limits.max_message_bytes, tokens=imap_tokens)
        self.fetch_budget = FETCH_BUDGET
        transports: list[Transport] = [transport] if transport else [SmtpTransport(config.smtp, smtp_tokens)
                                                                      for _ in range(config.smtp.connections)]
        self.ledger = Ledger()
        self.sender = OutboxSender(transports, self.clock, config.smtp, config.team, report=self.ledger,
                                   silences=Silences(config.calendar, config.service.update_every),
                                   sent_log_name=config.sent_log_name)
        # A process of its own sends beside the intake, unless the daemon runs on a clock of its own
        # (`sweep --at`, tests), a test brought its transport, or the database lives in this process.
        apart = isinstance(self.clock, SystemClock) and transport is None and apart_possible(config.database_url)
        self.delivery: Delivery = ProcessDelivery([config], lambda key: self.ledger) if apart \
            else ThreadDelivery(self.sender)
        self.pipeline = Pipeline(config, rules, renderer, self.clock)
        self.sweeper = Sweeper(config, renderer)
        self._sweep_failing = False
        self.health = Health(status_file(config))
        # systemd's Type=notify and watchdog, when it runs us; a team's of the process's when it serves several
        self.notifier: Notifier | TeamNotifier = Notifier.from_environment()
        self._delivering = False
        self._database_backoff = 1.0
        self.listeners: list[Callable[[Outcome], None]] = [metrics.mail_in]
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self._wakeup = threading.Event()  # cuts a wait (IDLE, poll, backoff) short
        # An outage lasts until a batch of mail is done, not until the next connect: a server that
        # fails right after each login is retried with growing waits and one ERROR, not once a second.
        self._failures, self._backoff = 0, 1.0
        self._refusals: dict[str, int] = {}  # logins refused in a row, by server
        self.refused = ""  # why `run` stopped on refused logins
        self.ledger.on_login_refused = self._smtp_login
        # One of several workers on PostgreSQL (workers.py): its name claims each sweep, and `leased` says
        # whether it still holds this mailbox's lease, asked before each mail's transaction.
        self.worker = ""
        self.leased: Callable[[], bool] = lambda: True

    def stop(self) -> None:
        """Ask `run` to finish: it stops reading, sends what is queued and returns."""
        self.stopping.set()
        self._wakeup.set()

    def request_reload(self) -> None:
        """Ask `run` to reload rules and templates at once, even while it waits for mail."""
        self.reload_requested.set()
        self._wakeup.set()

    def reload(self) -> None:
        """Load rules and templates again; on any problem keep the ones in force and say why."""
        self.reload_requested.clear()
        try:
            rules, renderer = check_everything(self.config)
        except InboxdError as exc:
            log.error("reload refused, the previous rules and templates stay in force:\n%s", exc)
            return
        self.pipeline = Pipeline(self.config, rules, renderer, self.clock)
        self.sweeper = Sweeper(self.config, renderer)
        log.info("reloaded %d rule(s) from %s", len(rules.rules), self.config.rules_dir)

    def _state(self, uidvalidity: int) -> MailboxState:
        label = self.config.mailbox.label
        with write_transaction():
            state = MailboxState.get_or_none(MailboxState.mailbox == label)
        if state is None:
            state = self._first_contact(uidvalidity)
        with write_transaction():
            if state.uidvalidity != uidvalidity:
                log.warning("IMAP: %s UIDVALIDITY changed from %d to %d (folder recreated?); reading it "
                            "again, mail already processed is recognised by its Message-ID",
                            label, state.uidvalidity, uidvalidity)
                state.uidvalidity, state.last_uid, state.backlog_uid = uidvalidity, 0, 0
                state.save()
        return state

    def _first_contact(self, uidvalidity: int) -> MailboxState:
        """No saved state: an empty folder just starts; mail already there waits for `inboxd adopt` (FirstContact)."""
        found = self.survey()
        if found.arrivals and self.config.mailbox.first_contact != ALL:
            raise FirstContact(first_contact_message(self.config, found))
        if found.arrivals:
            log.info("first contact with %s: tracking the %d mail(s) already there ([mailbox] first_contact = "
                     "\"all\")", self.config.mailbox.label, len(found.arrivals))
        return self.adopt(uidvalidity, adoption(ALL if found.arrivals else NOW, True, found))

    def survey(self) -> Found:
        """What the open folder holds: when each mail not marked done arrived, and the highest UID."""
        uids = self.source.new_uids(0)
        return Found(self.source.arrivals(uids), max(uids, default=0))

    def adopt(self, uidvalidity: int, adopted: Adoption) -> MailboxState:
        """Save where reading starts in a folder inboxd never read, and what becomes of the mail already there."""
        label = self.config.mailbox.label
        with write_transaction():
            if (state := MailboxState.get_or_none(MailboxState.mailbox == label)) is not None:
                raise InboxdError(f"adopt: inboxd already reads {label} (up to UID {state.last_uid}); adopt is "
                                  f"for the first contact with a mailbox, and nothing was changed")
            return MailboxState.create(mailbox=label, uidvalidity=uidvalidity,
                                       last_uid=adopted.last_uid, backlog_uid=adopted.backlog_uid,
                                       backlog_since=adopted.since, backlog_ack=adopted.ack)

    def _backlog(self, state: MailboxState, uids: list[int]) -> tuple[set[int], set[int]]:
        """Of these UIDs, the backlog's that are left alone, and those tracked without mail (`adopt --no-ack`)."""
        backlog = [uid for uid in uids if uid <= state.backlog_uid]
        if not backlog:
            return set(), set()
        skip = left_alone(backlog, state.backlog_uid, state.backlog_since, self.source.arrivals(backlog))
        return skip, set() if state.backlog_ack else set(backlog) - skip

    def ingest(self, uidvalidity: int, stop: threading.Event | None = None) -> int:
        """Process every new mail in batches; a batch is marked done only after its items are committed."""
        use_team(self.config.team.key)
        state = self._state(uidvalidity)
        uids = self.source.new_uids(state.last_uid)
        skip, quiet = self._backlog(state, uids)
        if len(uids) > len(skip):
            log.info("IMAP: %d new mail(s) in %s", len(uids) - len(skip), self.config.mailbox.folder)
        self.health.waiting_mail(len(uids) - len(skip))
        size = self.config.mailbox.batch_size
        for start in range(0, len(uids), size):
            if stop is not None and stop.is_set():
                break
            chunk = uids[start:start + size]
            done: list[int] = []
            aside: list[int] = []
            wanted = [uid for uid in chunk if uid not in skip]
            for fetched in self._fetch(wanted, uidvalidity, aside) if wanted else ():
                self._fence()
                outcome = self.pipeline.process(fetched.raw, fetched.uid, fetched.cut_from, fetched.uid in quiet)
                self.delivery.notify()
                (done if outcome.mark_done else aside).append(fetched.uid)
                del fetched  # its raw goes before the next fetch: memory is bounded per mail, not per batch
                self._tell(outcome)
            self.source.mark_done(done)
            self.source.set_aside(aside)
            self._fence()
            with write_transaction():
                MailboxState.update(last_uid=chunk[-1]).where(MailboxState.id == state.id).execute()
            self._working()
            self.health.waiting_mail(max(0, len(uids) - start - size))  # a long backlog is no stall
            if len(uids) > size:
                log.info("IMAP: %d of %d new mail(s) done", min(start + size, len(uids)), len(uids))
        self._working()
        if quiet:
            log.info("IMAP: %d mail(s) of the backlog tracked without acknowledgement (inboxd adopt --no-ack): "
                     "no mail was sent for them", len(quiet))
        return len(uids) - len(skip)

    def _fence(self) -> None:
        """Write nothing more for a mailbox whose lease this worker has lost: another may be watching it now."""
        if not self.leased():
            self.stop()
            raise LeaseLost(f"the lease of {self.config.mailbox.label} is gone: its mail waits for the next holder")

    def _tell(self, outcome: Outcome) -> None:
        for listener in self.listeners:
            listener(outcome)

    def _working(self) -> None:
        """A batch of mail done, or none to do: an outage, if there was one, is over."""
        self._failures, self._backoff = 0, 1.0
        self._alive()

    def _alive(self) -> None:
        """The loop turns: tell systemd's watchdog, unless delivery has died (then a restart helps)."""
        if self._delivering and self.delivery.alive():
            self.notifier.alive()

    def _fetch(self, uids: list[int], uidvalidity: int, aside: list[int]) -> Iterator[Fetched]:
        """The mails, a byte budget per fetch, handed on one at a time; a failed fetch is tried mail by mail.

        A mail the server will not hand over is recorded, the lead told, and its UID added to `aside`.
        """
        try:
            sizes = self.source.sizes(uids)
        except SourceError as exc:
            log.warning("%s; reading those %d mail(s) one by one", exc, len(uids))
            yield from self._one_by_one(uids, uidvalidity, aside)
            return
        for group in by_budget(uids, sizes, self.config.limits.max_message_bytes, self.fetch_budget):
            try:
                fetched = self.source.fetch(group, sizes)  # asked once for the batch, not again per group
            except SourceError as exc:
                log.warning("%s; reading those %d mail(s) one by one", exc, len(group))
                yield from self._one_by_one(group, uidvalidity, aside)
                continue
            fetched.reverse()
            while fetched:
                yield fetched.pop()  # not kept here once handed on

    def _one_by_one(self, uids: list[int], uidvalidity: int, aside: list[int]) -> Iterator[Fetched]:
        """Each mail in a fetch of its own, on a new connection after a failure (Dovecot hangs up: BYE)."""
        connected = False
        for uid in uids:
            failure: SourceError | None = None
            for _ in range(FETCH_ATTEMPTS):
                if not connected:
                    self._reopen(uidvalidity)
                    connected = True
                try:
                    fetched = self.source.fetch([uid])
                    break
                except SourceError as exc:
                    failure, connected = exc, False
            else:
                reason = self._unreadable(uid, uidvalidity, str(failure))
                aside.append(uid)
                self._tell(Outcome("parked", f"UID {uid}", "", "", reason))
                continue
            yield from fetched

    def _reopen(self, uidvalidity: int) -> None:
        """Connect again; a server that cannot be reached is an outage, a folder recreated is a fresh start."""
        self.source.close()
        if self.source.open() != uidvalidity:
            raise SourceHiccup("IMAP: UIDVALIDITY changed while reading mail; starting over")

    def _unreadable(self, uid: int, uidvalidity: int, failure: str) -> str:
        """A mail the server will not hand over: parked with the server's answer, and the lead told, once; why."""
        self._fence()  # recorded and told by the lease's holder only
        cfg, now = self.config, self.clock.now()
        key = f"<unreadable.{uidvalidity}.{uid}@inboxd.invalid>"  # its own Message-ID cannot be read
        where = f"moved to the folder {cfg.mailbox.attention_folder!r}" if cfg.mailbox.attention_folder \
            else f"flagged, in the folder {cfg.mailbox.folder!r}"
        reason = f"UID {uid}: the server failed to hand it over {FETCH_ATTEMPTS} times: {failure}"
        log.error("%s; it is %s, the other mails go on", reason, where)
        with write_transaction():  # an outage here pauses intake like any other
            told = seen_inbound(key, "") is not None
        if told:
            return reason  # recorded and told before a crash, which came before it was set aside
        try:
            context = self.pipeline.composer.context(None, None, request=NO_REQUEST) | {
                "reason": reason, "message": where, "now": now}
            mails = self.pipeline.composer.compose([Reply("unreadable", (cfg.team.lead,), threaded=False)],
                                                   context, None, now)
        except InboxdError as exc:
            log.error("the lead could not be told of UID %d: %s", uid, exc)
            mails = []
        day = now.astimezone(cfg.calendar.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        with write_transaction():
            self.pipeline.tracker.record_parked(key, "", uid, "", "", 0, reason, now)
            # Once a day: a store failing under a whole batch must not become a mail per mail to the lead.
            if mails and self.pipeline.tracker.claim_notice("unreadable", None, day, "lead", now):
                for mail in mails:
                    enqueue(mail, None, now)
            elif mails:
                log.info("UID %d: the lead was told of an unreadable mail today already; "
                         "`inboxd items --all` lists them all", uid)
        self.delivery.notify()
        return reason

    def sweep(self) -> list[Due]:
        """Run the jobs as of the clock's now; a failing job is logged, and the next sweep tries again."""
        use_team(self.config.team.key)
        try:
            sent = self.sweeper.run(self.clock.now(), self.worker)
        except Exception as exc:  # one line per outage, not one a minute
            why = outage(exc)
            if why is not None:
                forget_connection()  # a read may have failed, outside any write: the server may be gone
            if self._sweep_failing:
                log.debug("sweep: still failing: %s", exc)
            elif why is not None:
                log.warning("sweep: database unavailable: %s; the jobs run again when it is back", why)
            else:
                log.exception("sweep: the jobs failed; what they had not sent yet is tried again each minute")
            self._sweep_failing = True
            return []
        self.health.swept()
        if self._sweep_failing:
            log.info("sweep: the jobs run again")
            self._sweep_failing = False
        if sent:
            self.delivery.notify()
        return sent

    def _ingest(self, uidvalidity: int, stop: threading.Event | None = None) -> int | None:
        """`ingest`, or None after waiting out a database outage (which pauses intake: said once, health red).

        Nothing of the failed batch is marked done and `last_uid` stays: the next try reads it again,
        and what was committed before the outage is recognised by its Message-ID.
        """
        try:
            count = self.ingest(uidvalidity, stop)
        except DatabaseOutage as exc:
            if self.health.pause(str(exc)):
                log.warning("%s; intake paused, retrying", exc)
                self.notifier.status(f"intake paused: {exc}")
            self._wakeup.wait(self._database_backoff)
            self._wakeup.clear()
            self._database_backoff = min(self._database_backoff * 2, DATABASE_RETRY_SECONDS)
            return None
        self._database_backoff = 1.0
        self.health.imap_seen()
        if self.health.ok():
            log.info("database available again: intake resumed")
            self.notifier.status(f"watching {self.config.mailbox.label}")
        return count

    def sweep_once(self) -> list[Due]:
        """Run the jobs once and send what they queued (`inboxd sweep`); refuses while another inboxd runs."""
        use_team(self.config.team.key)
        with self._one_shot():
            return self.sweep()

    @contextmanager
    def _one_shot(self) -> Iterator[None]:
        """This inboxd alone on the mailbox, with the outbox sending, until what was queued is sent."""
        lock = InstanceLock(self.config)
        lock.acquire()
        self._start_delivery()
        try:
            yield
        finally:
            self._stop_delivery()
            lock.release()

    def _start_delivery(self) -> None:
        self.delivery.start()
        self._delivering = True

    def _stop_delivery(self) -> None:
        self._delivering = False
        self.delivery.stop()

    def once(self) -> int:
        """Process the new mail, run the due jobs, send what is queued, and return the number of mails read."""
        use_team(self.config.team.key)  # before the delivery starts: its thread works for this one's team
        with self._one_shot():
            uidvalidity = self.source.open()
            give_up = time.monotonic() + ONCE_PATIENCE_SECONDS
            try:
                while (count := self._ingest(uidvalidity)) is None:
                    if time.monotonic() > give_up:
                        raise DatabaseOutage(f"{self.health.status.reason}; gave up after waiting "
                                             f"{ONCE_PATIENCE_SECONDS:.0f} s: the mail stays on the server for the "
                                             f"next run")
            finally:
                self.source.close()
                self.health.stopped()
            self.sweep()
        return count

    def run(self, standby: bool = False) -> None:
        """Watch the mailbox until stop(); reconnect with backoff when the server goes away.

        Another inboxd on the same mailbox and database makes this one refuse to start, or, with
        `standby`, wait until that one stops.
        """
        use_team(self.config.team.key)
        lock = InstanceLock(self.config)
        if not lock.acquire(standby, self.stopping):
            return
        try:
            with http.serving(self.config.http_listen, {self.config.team.key: self.health}, [self.config],
                              self.clock):
                self.watch()
        finally:
            lock.release()

    def watch(self) -> None:
        """The loop of `run`, its lock held: alone, or in a thread of its own beside the other teams' (fleet.py)."""
        use_team(self.config.team.key)
        self._start_delivery()
        cfg = self.config.mailbox
        jobs = schedule.Scheduler()  # alongside IDLE: each wait ends in time for the next sweep
        jobs.every(SWEEP_SECONDS).seconds.do(self.sweep)
        self.sweep()  # catch up at once on what fell due while no inboxd ran
        self.notifier.ready(f"connecting to {cfg.label}")
        try:
            while not self.stopping.is_set():
                self.health.beat()  # alive even while IMAP is away (then `health` sees an old last_imap)
                self._alive()  # an outage is waited out, not cured by a restart: health and the log say it
                try:
                    uidvalidity = self.source.open()
                    self._refusals.pop("IMAP", None)
                    idle = getattr(self.source, "can_idle", False)
                    mode = "IDLE" if idle else f"polling every {cfg.poll_seconds}s"
                    self.health.connection("idle" if idle else "polling")
                    log.info("IMAP: %s %s; watching with %s", "reconnected to" if self._failures else "connected to",
                             cfg.label, mode)
                    self.notifier.status(f"watching {cfg.label} with {mode}")
                    while not self.stopping.is_set():
                        self._alive()
                        self._wakeup.clear()
                        if self.reload_requested.is_set():
                            self.reload()
                        if self._ingest(uidvalidity, self.stopping) is None:
                            continue  # the database is unavailable: no jobs, no waiting for mail; try again
                        jobs.run_pending()
                        wait = IDLE_RENEW_SECONDS if idle else cfg.poll_seconds
                        until_sweep = jobs.idle_seconds
                        self.source.wait(max(0.0, min(wait, wait if until_sweep is None else until_sweep)),
                                         self._wakeup)
                except SourceHiccup as exc:
                    log.info("%s", exc)
                    self.source.close()
                except LoginRefused as exc:
                    self.source.close()
                    self._login_refused(str(exc))
                    self._wakeup.wait(self._backoff)
                    self._wakeup.clear()
                    self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)
                except SourceError as exc:
                    self._failures += 1
                    self.health.connection("down")
                    # One line per outage, not one per retry.
                    (log.error if self._failures == 1 else log.debug)(
                        "%s; retrying with backoff (up to %ds)", exc, MAX_BACKOFF_SECONDS)
                    self.notifier.status(f"IMAP unavailable, retrying: {exc}")
                    self.source.close()
                    self._wakeup.wait(self._backoff)
                    self._wakeup.clear()
                    self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)
        finally:
            self.notifier.stopping()
            self.source.close()
            self._stop_delivery()
            self.health.stopped()
            log.info("stopped")
        if self.refused:
            raise LoginsRefused(self.refused)

    def _smtp_login(self, why: str, ok: bool) -> None:
        """The outbox's word: its login was refused (`why`), or mail goes again (`ok`)."""
        if ok:
            self._refusals.pop("SMTP", None)
        else:
            self._login_refused(why, "SMTP")

    def _login_refused(self, why: str, server: str = "IMAP") -> None:
        """One more refusal in a row; the LOGIN_ATTEMPTS-th stops `run` (a network outage never does)."""
        count = self._refusals[server] = self._refusals.get(server, 0) + 1
        if count < LOGIN_ATTEMPTS:
            log.error("%s; trying again (%d of %d)", why, count, LOGIN_ATTEMPTS)
            return
        self.refused = (f"{why}; refused {count} times in a row, so inboxd stops rather than risk locking the "
                        f"account: fix the credentials, try them with `inboxd check --connect`, then start again")
        log.error("%s", self.refused)
        self.stop()


def start_patiently(make: Callable[[], Daemon]) -> Daemon:
    """Build the daemon, waiting out a database locked, busy or full at start; one that cannot be opened fails.

    A wrong path or password is the admin's to fix (one line, exit 1); a lock held by a backup, a
    migration in another shell or a full disk is an outage that passes.
    """
    wait, said = 1.0, False
    while True:
        try:
            return make()
        except Exception as exc:
            why = outage(exc)
            if why is None or not any(word in why.lower() for word in ("locked", "busy", "full")):
                raise
            forget_connection()
            if not said:
                log.warning("database unavailable at start: %s; waiting for it (retrying up to every %.0f s)",
                            why, DATABASE_RETRY_SECONDS)
                said = True
            time.sleep(wait)
            wait = min(wait * 2, DATABASE_RETRY_SECONDS)
