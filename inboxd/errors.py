"""The exception tree of inboxd.

    InboxdError                 anything the user can act on; the CLI prints it, exit 1
    ├── ConfigError             config.toml is wrong (file, key, why)
    ├── RulesError              rules/*.toml are wrong (a list of file:line: rule: key: why)
    ├── TemplateError           a template is missing, broken or fails to render
    ├── MessageError            a mail cannot be decoded into an InboundMessage
    ├── SourceError             the IMAP mailbox cannot be reached or used
    │   ├── SourceHiccup        one response was unreadable: reconnect at once
    │   └── LoginRefused        the server (or the OAuth2 token endpoint) refused the credentials
    │       └── LoginsRefused   ... several times in a row: `run` stops, exit 3
    ├── DatabaseOutage          the database is busy, locked, full or down: wait, never park
    └── DeliveryError           an outgoing mail could not be handed to SMTP
        ├── SmtpUnreachable     the server could not be reached (no mail goes until it is back)
        │   └── SmtpLoginRefused    it refused the login (535) or no OAuth2 token was given
        └── PermanentDeliveryError   the server refused it for good (5xx)
"""


class InboxdError(Exception):
    """An error with a message meant for the person running inboxd."""


class ProblemList(InboxdError):
    """Several problems found at once, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ConfigError(ProblemList):
    """The configuration file is invalid."""


class RulesError(ProblemList):
    """One or more rule files are invalid."""


class TemplateError(ProblemList):
    """One or more templates are missing or fail to render."""


class MessageError(InboxdError):
    """A raw mail cannot be decoded."""


class SourceError(InboxdError):
    """The mailbox cannot be reached or used."""


class SourceHiccup(SourceError):
    """The server is up but one response could not be read: reconnect at once, no outage."""


class LoginRefused(SourceError):
    """The IMAP server, or the OAuth2 token endpoint, refused the credentials: repeated, `run` stops."""


class LoginsRefused(LoginRefused):
    """Logins (IMAP or SMTP) refused several times in a row: `run` stops rather than risk a lockout."""

    exit_code = 3  # distinct, for a service manager and a monitor: the admin must fix the credentials


class DatabaseOutage(InboxdError):
    """The database is busy, locked, full or unreachable: an outage to wait out, not a fault of the mail."""


class DeliveryError(InboxdError):
    """An outgoing mail could not be delivered this time."""

    unreachable = False  # the server itself could not be reached: no other mail will go either


class SmtpUnreachable(DeliveryError):
    """The SMTP server could not be reached or dropped the connection."""

    unreachable = True


class PermanentDeliveryError(DeliveryError):
    """The SMTP server refused an outgoing mail for good."""


class SmtpLoginRefused(SmtpUnreachable):
    """The SMTP server refused the login (535), or the OAuth2 token endpoint refused the credentials."""
