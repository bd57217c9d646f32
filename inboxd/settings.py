"""The validated configuration: frozen dataclasses, built only by `config.load_config`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .clock import BusinessCalendar, Duration, Weekly


@dataclass(frozen=True)
class Member:
    """A team member who can own items."""

    email: str
    name: str


@dataclass(frozen=True)
class TeamConfig:
    """Who the team is and how it is addressed."""

    name: str
    address: str
    ref_prefix: str
    lead: str
    members: tuple[Member, ...]
    absent: tuple[str, ...] = ()  # members away for now: assignment skips them
    language: str = "en"  # the default set's language: mail to the team, and to requesters no other set fits

    def member(self, email: str) -> Member | None:
        """The member with this address, if any."""
        return next((m for m in self.members if m.email == email.lower()), None)

    def find(self, who: str) -> Member | None:
        """The member named by address, name, or the part of the address before the @."""
        who = who.strip().strip("<>").lower()
        return next((m for m in self.members
                     if who in (m.email, m.name.lower(), m.email.partition("@")[0])), None)

    def speaks_for_team(self, email: str) -> bool:
        """Members and the lead may send keywords."""
        return bool(email) and (email == self.lead or self.member(email) is not None)

    @property
    def key(self) -> str:
        """The team's key in the database: its reference prefix (unique across teams; item numbers are global)."""
        return self.ref_prefix

    def ref(self, number: int | None) -> str:
        """An item's reference, e.g. IT-42 (IT-NEW for one not saved yet): the only place it is spelled."""
        return f"{self.ref_prefix}-{number if number is not None else 'NEW'}"


@dataclass(frozen=True)
class Secret:
    """A password read from the environment or a file; never printed."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "********"


def shown_url(url: str) -> str:
    """A database URL fit for a log or an error line: any password in it is replaced by ***."""
    url = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


@dataclass(frozen=True)
class OAuth2Config:
    """Where and how inboxd gets OAuth2 access tokens for IMAP and SMTP (`[mailbox.oauth2]`)."""

    provider: str  # microsoft | google | generic
    client_id: str
    token_url: str  # derived for the named providers
    scope: str  # likewise
    grant: str = "client_credentials"  # or refresh_token (a delegated mailbox, after `inboxd auth login`)
    client_secret: Secret | None = None
    tenant: str | None = None  # Microsoft: the directory (tenant) id or domain
    refresh_token_file: Path | None = None  # where `inboxd auth login` keeps the refresh token (mode 0600)
    device_url: str | None = None  # the device authorization endpoint for `inboxd auth login`
    authorize_url: str | None = None  # the browser sign-in for `inboxd auth login` where there is no device flow
    mechanism: str = "xoauth2"  # IMAP SASL mechanism: xoauth2 or oauthbearer (SMTP always uses XOAUTH2)


@dataclass(frozen=True)
class MailboxConfig:
    """The IMAP mailbox inboxd watches."""

    host: str
    port: int
    tls: str
    user: str
    password: Secret | None
    ca_file: Path | None = None  # trust this CA instead of the system's (a private server)
    folder: str = "INBOX"
    done_folder: str | None = None
    attention_folder: str | None = None  # mail nobody could handle goes here; unset: it stays where it is
    idle: bool = True
    poll_seconds: int = 60
    batch_size: int = 100
    timeout_seconds: int = 60  # a server that answers nothing for this long is taken to be gone
    first_contact: str = "stop"  # no saved state and mail waiting: "stop" and explain (`inboxd adopt`), or "all"
    oauth2: OAuth2Config | None = None  # set when auth = "oauth2": tokens instead of the password

    @property
    def label(self) -> str:
        """A name for this mailbox in the database and in logs."""
        return f"{self.user}@{self.host}:{self.port}/{self.folder}"


@dataclass(frozen=True)
class SmtpConfig:
    """The SMTP server inboxd sends through."""

    host: str
    port: int
    tls: str
    user: str | None = None
    password: Secret | None = None
    ca_file: Path | None = None
    connections: int = 1
    max_attempts: int = 10
    retry_seconds: int = 30
    max_retry_seconds: int = 3600
    timeout_seconds: int = 30
    oauth2: OAuth2Config | None = None  # set when auth = "oauth2"; the mailbox's section unless [smtp.oauth2]


@dataclass(frozen=True)
class ServiceConfig:
    """The team's service promises."""

    default_due: Duration
    remind_owner_before: Duration
    notify_requester_before: Duration
    update_every: Duration
    reopen_window: Duration
    survey: bool
    announce_new: bool = True  # an item nobody owns is mailed to its queue's members, who can #take it
    digest: Weekly | None = None  # when the weekly digest goes to the lead and each member; None: never


@dataclass(frozen=True)
class LimitsConfig:
    """What keeps floods, loops and huge mail in check."""

    automatic_per_sender: int = 20  # automatic mails one address gets, and requests announced at once, per window
    automatic_window: Duration = Duration(1, "hours")
    mails_per_item: int = 30  # once an item sent this many mails in a window, mail about it is held: loops stop
    max_message_bytes: int = 25 * 1024 * 1024  # larger mail is tracked from its headers; the rest stays on the server


@dataclass(frozen=True)
class CommandsConfig:
    """How inboxd makes sure a keyword mail really comes from a team member."""

    require_secret: bool = True  # keywords and relays count only when sent to the member's secret reply address
    authserv_id: str | None = None  # trust this server's Authentication-Results: DMARC or DKIM must pass


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    path: Path
    team: TeamConfig
    queues: dict[str, tuple[str, ...]]
    mailbox: MailboxConfig
    smtp: SmtpConfig
    database_url: str
    rules_dir: Path
    templates_dir: Path
    calendar: BusinessCalendar
    service: ServiceConfig
    commands: CommandsConfig = CommandsConfig()
    limits: LimitsConfig = LimitsConfig()
    state_dir: Path | None = None  # where the health file lives; None: beside the SQLite database or the config
    log_format: str = "text"  # [log] format: text | json
    http_listen: tuple[str, int] | None = None  # [http] listen: where /healthz and /metrics are served; None: not
    team_file: Path | None = None  # the team's own file in the teams folder, over `path`; None: `path` alone

    @property
    def sent_log_name(self) -> str:
        """The sent log's name beside a SQLite file (`outbox.SentLog`): one per team when teams share the file."""
        return f"{self.team.key}.sent" if self.team_file is not None else "sent"
