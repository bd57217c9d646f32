"""Mail sources: the MailSource protocol and the IMAP implementation (UIDs, IDLE, poll)."""

from __future__ import annotations

import logging
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from .config import MailboxConfig
from .errors import LoginRefused, SourceError, SourceHiccup
from .oauth2 import HttpTokens, TokenError, TokenSource

log = logging.getLogger(__name__)
DONE_KEYWORD = "$InboxdDone"
IDLE_RENEW_SECONDS = 25 * 60  # servers may drop an IDLE after 30 minutes (RFC 2177)
FETCH_BUDGET = 16 * 1024 * 1024  # bytes of mail per FETCH: one fetch holds at most this, or one larger mail
HEADER_CAP = 256 * 1024  # bytes of an over-limit mail's header block that are read
TEXT_START = 64 * 1024  # bytes of an over-limit mail's body that are read: the text is almost always first
UIDS_PER_COMMAND = 2000  # a command naming more UIDs could pass a server's line limit (Dovecot: 64 kB)


@dataclass(frozen=True)
class Fetched:
    """One mail as it sits on the server (or, for a huge one, its headers and the start of its body)."""

    uid: int
    raw: bytes
    cut_from: int = 0  # the mail's full size when only its start was read, else 0


class MailSource(Protocol):
    """Where mail comes from and where it is marked done."""

    def open(self) -> int:
        """Connect and select the folder; returns its UIDVALIDITY."""
        ...

    def new_uids(self, after: int) -> list[int]:
        """UIDs above `after`, ascending."""
        ...

    def arrivals(self, uids: list[int]) -> dict[int, datetime]:
        """When each of these mails arrived (INTERNALDATE), leaving out the mail inboxd marked done."""
        ...

    def sizes(self, uids: list[int]) -> dict[int, int]:
        """The size in bytes of each of these mails that is still there."""
        ...

    def fetch(self, uids: list[int], sizes: Mapping[int, int] | None = None) -> list[Fetched]:
        """The raw bytes of these mails in one round, without marking them seen; `sizes` if already asked."""
        ...

    def mark_done(self, uids: list[int]) -> None:
        """Move (or flag) mails whose items are committed."""
        ...

    def set_aside(self, uids: list[int]) -> None:
        """Move mails nobody could handle to the attention folder, if there is one; else flag them."""
        ...

    def wait(self, seconds: float, interrupt: threading.Event) -> None:
        """Return when new mail may have arrived, `seconds` passed, or `interrupt` is set."""
        ...

    def close(self) -> None:
        """Disconnect."""
        ...


def by_budget(uids: list[int], sizes: Mapping[int, int], max_bytes: int,
              budget: int = FETCH_BUDGET) -> Iterator[list[int]]:
    """The mails still there, in groups of at most `budget` bytes to fetch at once; a larger mail alone.

    A mail over `max_bytes` counts as the part of it that is read.
    """
    group: list[int] = []
    total = 0
    for uid in uids:
        if uid not in sizes:
            continue  # deleted by a person meanwhile
        size = min(sizes[uid], HEADER_CAP + TEXT_START) if sizes[uid] > max_bytes else sizes[uid]
        if group and total + size > budget:
            yield group
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        yield group


def _unread(client: IMAPClient) -> bool:
    """Whether a response already sits in a buffer (imaplib's line reader, or TLS's), where select() cannot see it.

    A server's EXISTS that arrives in the same packet as IDLE's "+ idling" is read into imaplib's
    buffer together with it; waiting on the socket would then leave that mail for the next sweep.
    """
    sock = client.socket()
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    reader = getattr(client._imap, "file", None)  # imaplib reads every line through this buffered file
    if reader is None:
        return False
    timeout = sock.gettimeout()
    sock.setblocking(False)  # peek() must not wait for the network: only what is buffered counts
    try:
        return bool(reader.peek(1))
    except (BlockingIOError, ssl.SSLWantReadError, OSError):
        return False
    finally:
        sock.settimeout(timeout)


def _reported(client: IMAPClient) -> bool:
    """Whether the server told of new mail (EXISTS) in an answer to another command; then forget all it told.

    imaplib files such a line away, and a server says it once: mail that arrived while inboxd searched,
    fetched or moved (`* SEARCH 3` then `* 2 EXISTS`) would otherwise wait for the next push or sweep.
    The rest nobody asks for (an EXPUNGE per mail moved, a COPYUID per move) would pile up for as long
    as the connection lives: about 60 bytes a mail, for months.
    """
    responses = client._imap.untagged_responses
    told = "EXISTS" in responses
    responses.clear()  # between commands, or once IDLE has begun: nothing in it belongs to a command under way
    return told


def _forget_expunged(client: IMAPClient) -> None:
    """After a move: let go of its EXPUNGE per mail and its COPYUID, which nobody reads; an EXISTS stays for `wait`.

    Kept until the next search, a backlog of 20,000 mails read in one `ingest` held 20,000 of them (~45 B each).
    """
    responses = client._imap.untagged_responses
    told = responses.pop("EXISTS", None)
    responses.clear()
    if told:
        responses["EXISTS"] = told


def _fail(action: str, exc: Exception) -> SourceError:
    return SourceError(f"IMAP: {action} failed: {type(exc).__name__}: {exc}")


CONNECTION_ERRORS = (IMAPClientError, OSError, socket.error, ssl.SSLError)


class ImapSource:
    """An IMAP folder read by UID with imapclient."""

    def __init__(self, config: MailboxConfig, max_bytes: int = 25 * 1024 * 1024, read_only: bool = False,
                 tokens: TokenSource | None = None) -> None:
        self.config, self.max_bytes = config, max_bytes
        self.read_only = read_only  # a dry run: the folder is EXAMINEd, no folder is created
        self.tokens = tokens or (HttpTokens(config.oauth2) if config.oauth2 else None)
        self.client: IMAPClient | None = None
        self.can_idle = False
        self.can_move = False
        self.use_keyword = False

    def open(self) -> int:
        client = self._connect()
        cfg = self.config
        self.client = client
        try:
            capabilities = client.capabilities()
            self.can_idle = cfg.idle and b"IDLE" in capabilities
            self.can_move = b"MOVE" in capabilities
            for folder in (cfg.done_folder, cfg.attention_folder):
                if folder and not self.read_only and not client.folder_exists(folder):
                    log.info("IMAP: creating the folder %r", folder)
                    client.create_folder(folder)
            selected = client.select_folder(cfg.folder, readonly=self.read_only)
        except CONNECTION_ERRORS as exc:
            self.close()
            raise _fail(f"selecting folder {cfg.folder!r}", exc) from None
        self.use_keyword = b"\\*" in selected.get(b"PERMANENTFLAGS", ())
        return int(selected[b"UIDVALIDITY"])

    def check(self) -> str:
        """Log in and out, changing nothing (`inboxd check --connect`); what was found, or SourceError."""
        cfg = self.config
        client = self._connect()
        try:
            folders = {name: client.folder_exists(name) for name in
                       filter(None, (cfg.folder, cfg.done_folder, cfg.attention_folder))}
            mails = client.folder_status(cfg.folder, [b"MESSAGES"])[b"MESSAGES"] if folders[cfg.folder] else 0
        except CONNECTION_ERRORS as exc:
            raise _fail("looking at the folders", exc) from None
        finally:
            try:
                client.logout()
            except CONNECTION_ERRORS:
                pass
        how = f"OAuth2, {cfg.oauth2.mechanism.upper()}" if cfg.oauth2 else "password"
        found = f"the folder {cfg.folder!r} holds {mails} mail(s)" if folders[cfg.folder] else \
            f"but the folder {cfg.folder!r} does not exist"
        later = [name for name, there in folders.items() if not there and name != cfg.folder]
        return (f"logged in as {cfg.user!r} on {cfg.host}:{cfg.port} ({cfg.tls}, {how}); {found}" +
                (f"; {', '.join(map(repr, later))} will be created at the first run" if later else ""))

    def _connect(self) -> IMAPClient:
        """A logged-in connection; LoginRefused, or SourceError when the server cannot be reached."""
        cfg = self.config
        try:
            context = ssl.create_default_context(cafile=cfg.ca_file)
            client = IMAPClient(cfg.host, port=cfg.port, ssl=cfg.tls == "ssl",
                                ssl_context=context if cfg.tls == "ssl" else None, timeout=cfg.timeout_seconds)
            # imapclient writes a command's final CRLF separately: without NODELAY, Nagle and a
            # delayed ACK can hold every command back by ~40 ms.
            client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # imapclient turns imaplib's debug messages on (level 5) and sends them to a logger; imaplib
            # then formats the repr of every response, a fetched mail included, even when nothing logs
            # it: about 2.3 times a mail's size of memory for a moment. Off, a fetch holds the mail once.
            client._imap.debug = 0
            client.normalise_times = False  # INTERNALDATE with its offset, not in this machine's local time
            if cfg.tls == "starttls":
                client.starttls(context)
            self._login(client)
        except LoginError as exc:
            client.shutdown()
            if isinstance(exc.__context__, IMAPClient.AbortError):  # the connection broke: no refusal
                raise SourceError(f"IMAP: the connection to {cfg.host}:{cfg.port} broke during login: {exc}") \
                    from None
            if self.tokens is not None:
                self.tokens.invalidate()  # expired or revoked early: the next try fetches a new one
            said = re.sub(r"^b(['\"])(.*)\1$", r"\2", str(exc))  # imaplib's answer is the repr of bytes
            raise LoginRefused(f"IMAP: login as {cfg.user!r} on {cfg.host}:{cfg.port} was refused: {said}") from None
        except TokenError as exc:
            client.shutdown()
            raise (LoginRefused if exc.refused else SourceError)(f"IMAP: no login: {exc}") from None
        except CONNECTION_ERRORS as exc:
            raise SourceError(f"IMAP: cannot connect to {cfg.host}:{cfg.port} ({cfg.tls}): "
                              f"{type(exc).__name__}: {exc}") from None
        return client

    def _login(self, client: IMAPClient) -> None:
        """With the password, or with an OAuth2 token (XOAUTH2 or OAUTHBEARER)."""
        cfg = self.config
        if self.tokens is None:
            client.login(cfg.user, cfg.password.value if cfg.password else "")
        elif cfg.oauth2 is not None and cfg.oauth2.mechanism == "oauthbearer":
            client.oauthbearer_login(cfg.user, self.tokens.token())
        else:
            client.oauth2_login(cfg.user, self.tokens.token())

    def _client(self) -> IMAPClient:
        if self.client is None:
            raise SourceError("IMAP: not connected")
        return self.client

    def new_uids(self, after: int) -> list[int]:
        client = self._client()
        try:
            _reported(client)  # what was told before this search, it finds
            uids = client.search(["UID", f"{after + 1}:*"])
        except CONNECTION_ERRORS as exc:
            raise _fail("searching for new mail", exc) from None
        return sorted(uid for uid in uids if uid > after)  # n:* always includes the last UID

    def arrivals(self, uids: list[int]) -> dict[int, datetime]:
        # A backlog can be 20,000 mails: imapclient's answer per mail (a dict, its flags, a datetime with
        # a tzinfo object of its own) is ~1 kB, so only the moment is kept, in UTC, one command at a time.
        arrived: dict[int, datetime] = {}
        try:
            for start in range(0, len(uids), UIDS_PER_COMMAND):
                found = self._client().fetch(uids[start:start + UIDS_PER_COMMAND], [b"INTERNALDATE", b"FLAGS"])
                arrived.update((uid, data[b"INTERNALDATE"].astimezone(UTC)) for uid, data in found.items()
                               if DONE_KEYWORD.encode() not in data.get(b"FLAGS", ()))
                del found
        except CONNECTION_ERRORS as exc:
            raise _fail("asking when the mail arrived", exc) from None
        return arrived

    def sizes(self, uids: list[int]) -> dict[int, int]:
        try:
            found = self._client().fetch(uids, [b"RFC822.SIZE"])
        except CONNECTION_ERRORS as exc:
            raise _fail(f"asking the size of {len(uids)} mail(s)", exc) from None
        return {uid: found[uid].get(b"RFC822.SIZE", 0) for uid in uids if uid in found}

    def fetch(self, uids: list[int], sizes: Mapping[int, int] | None = None) -> list[Fetched]:
        sizes = self.sizes(uids) if sizes is None else sizes
        huge = [uid for uid in uids if sizes.get(uid, 0) > self.max_bytes]
        small = [uid for uid in uids if uid in sizes and uid not in huge]
        client = self._client()
        try:
            whole = client.fetch(small, [b"BODY.PEEK[]"]) if small else {}
            # Of a huge mail, its headers (up to a cap) and the start of its body; files stay on the server.
            starts = client.fetch(huge, [f"BODY.PEEK[HEADER]<0.{HEADER_CAP}>".encode(),
                                         f"BODY.PEEK[TEXT]<0.{TEXT_START}>".encode()]) if huge else {}
        except CONNECTION_ERRORS as exc:
            raise _fail(f"fetching {len(uids)} mail(s)", exc) from None
        # A mail deleted by a person between SEARCH and FETCH simply isn't returned.
        fetched = []
        for uid in uids:
            if b"BODY[]" in whole.get(uid, {}):
                fetched.append(Fetched(uid, whole[uid][b"BODY[]"]))
            elif b"BODY[HEADER]<0>" in starts.get(uid, {}):
                head, text = starts[uid][b"BODY[HEADER]<0>"], starts[uid].get(b"BODY[TEXT]<0>") or b""
                if len(head) >= HEADER_CAP:  # cut: end it after its last whole line, then the blank line
                    head = head[:head.rfind(b"\n") + 1] + b"\r\n"
                fetched.append(Fetched(uid, head + text, sizes[uid]))
        return fetched

    def mark_done(self, uids: list[int]) -> None:
        if not uids:
            return
        folder = self.config.done_folder
        try:
            if folder:
                self._move(uids, folder)
            else:
                flags = [b"\\Seen", DONE_KEYWORD.encode()] if self.use_keyword else [b"\\Seen"]
                self._client().add_flags(uids, flags)
        except CONNECTION_ERRORS as exc:
            raise _fail(f"marking {len(uids)} mail(s) done", exc) from None

    def set_aside(self, uids: list[int]) -> None:
        folder = self.config.attention_folder
        if not uids:
            return
        try:
            if folder:
                self._move(uids, folder)
            else:
                self._client().add_flags(uids, [b"\\Flagged"])
        except CONNECTION_ERRORS as exc:
            raise _fail(f"setting {len(uids)} mail(s) aside", exc) from None

    def _move(self, uids: list[int], folder: str) -> None:
        client = self._client()
        try:
            self._move_now(client, uids, folder)
        except IMAPClient.Error as exc:
            if isinstance(exc, IMAPClient.AbortError):
                raise
            # Someone moved or deleted some of them meanwhile (Dovecot: NO [EXPUNGEISSUED]): move the rest.
            still_here = client.search(["UID", ",".join(str(u) for u in uids)])
            if len(still_here) == len(uids):
                raise
            log.info("IMAP: %d of %d mail(s) were moved or deleted by someone else meanwhile; moving the rest",
                     len(uids) - len(still_here), len(uids))
            if still_here:
                self._move_now(client, still_here, folder)

    def _move_now(self, client: IMAPClient, uids: list[int], folder: str) -> None:
        if self.can_move:
            client.move(uids, folder)
        else:
            client.copy(uids, folder)
            client.delete_messages(uids)
            client.uid_expunge(uids) if b"UIDPLUS" in client.capabilities() else client.expunge()
        _forget_expunged(client)

    def wait(self, seconds: float, interrupt: threading.Event) -> None:
        if not self.can_idle:
            interrupt.wait(seconds)
            return
        client = self._client()
        if _reported(client):  # told while inboxd was busy: look at once
            return
        deadline = time.monotonic() + min(seconds, IDLE_RENEW_SECONDS)
        try:
            client.idle()
            try:
                if _reported(client):  # told just before IDLE's answer: nothing more will be said of it
                    return
                while not interrupt.is_set() and time.monotonic() < deadline:
                    if _unread(client):  # came with IDLE's answer: select() below would never see it
                        break
                    if not select.select([client.socket()], [], [], 1.0)[0]:
                        continue
                    responses = client.idle_check(timeout=0)
                    if not responses:
                        # Readable but nothing to read: the server hung up (imapclient hides the EOF), or
                        # wrote half a line. Without this, a dead connection would be "idle" for good.
                        raise SourceHiccup("IMAP: the connection closed (or a response broke off) while "
                                           "idling; reconnecting")
                    if any(b"EXISTS" in r for r in responses if isinstance(r, tuple)):
                        break
            finally:
                client.idle_done()
        except SourceHiccup:
            raise
        except IMAPClient.AbortError as exc:
            # imapclient reads IDLE responses without blocking; a line the server wrote in two
            # pieces (pymap does) is lost half-read, and the stream can't be trusted after that.
            raise SourceHiccup(f"IMAP: an IDLE response could not be read ({exc}); reconnecting") from None
        except CONNECTION_ERRORS as exc:
            raise _fail("waiting for new mail (IDLE)", exc) from None

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.logout()
            except CONNECTION_ERRORS:
                pass
            self.client = None


@dataclass
class FakeSource:
    """An in-memory folder with UIDs; for unit tests of the daemon loop."""

    uidvalidity: int = 1
    mails: dict[int, bytes] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)
    aside: list[int] = field(default_factory=list)
    arrived: dict[int, datetime] = field(default_factory=dict)  # INTERNALDATE; unset: when it was added
    broken: set[int] = field(default_factory=set)  # mails the server fails to deliver, as if unreadable there
    fetches: list[list[int]] = field(default_factory=list)  # each fetch asked for, in order
    refuse_logins: int = 0  # this many opens are refused, as with a wrong password

    def open(self) -> int:
        if self.refuse_logins:
            self.refuse_logins -= 1
            raise LoginRefused("IMAP: login as 'inboxd' on the fake server was refused: [AUTHENTICATIONFAILED]")
        return self.uidvalidity

    def add(self, raws: Iterable[bytes], at: datetime | None = None) -> None:
        """Deliver mails into the folder (as arrived `at`, if given)."""
        for raw in raws:
            uid = max([0, *self.mails, *self.done]) + 1
            self.mails[uid], self.arrived[uid] = raw, at or datetime.now(UTC)

    def new_uids(self, after: int) -> list[int]:
        return sorted(uid for uid in self.mails if uid > after)

    def arrivals(self, uids: list[int]) -> dict[int, datetime]:
        return {uid: self.arrived.get(uid, datetime.now(UTC)) for uid in uids if uid in self.mails}

    def sizes(self, uids: list[int]) -> dict[int, int]:
        return {uid: len(self.mails[uid]) for uid in uids if uid in self.mails}

    def fetch(self, uids: list[int], sizes: Mapping[int, int] | None = None) -> list[Fetched]:
        self.fetches.append(list(uids))
        if self.broken.intersection(uids):
            raise SourceError("IMAP: fetching mail failed: FETCH failed: Internal error occurred.")
        return [Fetched(uid, self.mails[uid]) for uid in uids if uid in self.mails]

    def mark_done(self, uids: list[int]) -> None:
        for uid in uids:
            self.mails.pop(uid, None)
            self.done.append(uid)

    def set_aside(self, uids: list[int]) -> None:
        self.aside.extend(uids)

    def wait(self, seconds: float, interrupt: threading.Event) -> None:
        interrupt.wait(min(seconds, 0.01))

    def close(self) -> None:
        pass
