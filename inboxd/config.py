"""config.toml -> frozen dataclasses; every error names the file, the line, the key and why."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import languages
from .clock import BusinessCalendar, Duration, Weekly, parse_duration, parse_hours, parse_weekly, parse_workdays
from .errors import ConfigError
from .settings import (
    CommandsConfig,
    Config,
    LimitsConfig,
    MailboxConfig,
    Member,
    OAuth2Config,
    Secret,
    ServiceConfig,
    SmtpConfig,
    TeamConfig,
    shown_url,
)
from .tomlfile import Layered, TomlFile, load_toml
from .wording import did_you_mean

__all__ = ["CommandsConfig", "Config", "LimitsConfig", "MailboxConfig", "Member", "OAuth2Config", "Secret",
           "ServiceConfig",
           "SmtpConfig", "TeamConfig", "default_config_path", "load_config", "load_teams", "parse_size"]

TLS_MODES = ("ssl", "starttls", "none")
LOG_FORMATS = ("text", "json")  # [log] format: inboxd.logs.formatter
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def _is_email(value: str) -> bool:
    local, at, domain = value.partition("@")
    return bool(local) and bool(at) and "." in domain and " " not in value


class _Reader:
    """Takes typed values out of one TOML table, collecting every problem."""

    def __init__(self, doc: TomlFile | Layered, table: str, problems: list[str]) -> None:
        self.doc, self.table, self.problems = doc, table, problems
        data: Any = doc.data
        for part in table.split(".") if table else ():  # "mailbox.oauth2" is [mailbox.oauth2]
            data = data.get(part, {}) if isinstance(data, dict) else None
        self.data: dict[str, Any] = data
        if not isinstance(data, dict):
            self.fail(None, "must be a table")
            self.data = {}
        self.used: set[str] = set()

    def folder(self, key: str) -> Path:
        """What a relative path in this table's `key` is relative to: the folder of the file that wrote it."""
        return self.doc.folder(self.table, key)

    def fail(self, key: str | None, why: str) -> None:
        name = f"[{self.table}] {key}" if key and self.table else f"[{key or self.table}]"
        self.problems.append(f"{self.doc.where(self.table, key)}: {name}: {why}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...,
            convert: Callable[[Any], Any] | None = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                self.fail(key, "missing (required)")
                return None
            if default is None or convert is None:
                return default
        value = self.data.get(key, default)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__.replace("str", "a string").replace("int", "an integer")
                                .replace("bool", "true/false").replace("list", "a list")
                                for k in kinds)
            self.fail(key, f"expected {names}, got {value!r}")
            return None
        if convert is None:
            return value
        try:
            return convert(value)
        except (ValueError, TypeError, KeyError) as exc:
            self.fail(key, str(exc).strip("'\""))
            return None

    def finish(self, allowed: list[str] | None = None) -> None:
        """Report keys that nobody asked for, with a suggestion."""
        known = allowed if allowed is not None else sorted(self.used)
        for key in self.data:
            if key not in known:
                hint = did_you_mean(key, known)
                self.fail(key, f"unknown {'key' if self.table else 'section'}{hint}")


def _email(value: str) -> str:
    if not _is_email(value):
        raise ValueError(f"not an email address: {value!r}")
    return value.lower()


def _secret(reader: _Reader, required: bool, resolve: bool, key: str = "password") -> Secret | None:
    """The secret that `{key}_env` or `{key}_file` names (a password, or an OAuth2 client secret)."""
    # The values of password_env and password_file are never shown in an error: an admin who wrote
    # the password itself there would see it echoed on a terminal, in a log or a CI run.
    env_key, file_key = f"{key}_env", f"{key}_file"
    env, file = _unshown(reader, env_key), _unshown(reader, file_key)
    if env and file:
        reader.fail(env_key, f"give {env_key} or {file_key}, not both")
    if env and (resolve or not _ENV_NAME.fullmatch(env)) and env not in os.environ:
        variable = "INBOXD_OAUTH2_CLIENT_SECRET" if key != "password" else \
            f"INBOXD_{'IMAP' if reader.table == 'mailbox' else 'SMTP'}_PASSWORD"
        if env == variable:  # the name the example config uses: no secret, safe to say
            reader.fail(env_key, f"{variable} is not set: export it where inboxd runs (or use {file_key})")
        else:
            reader.fail(env_key, f"names no environment variable that is set: export it where inboxd runs; it "
                                 f"should be a variable's name such as {variable}, not the "
                                 f"{key.replace('_', ' ')} ({_NOT_SHOWN})")
        return None
    if not resolve:  # commands that never connect don't need the secret itself
        return None
    if env:
        return _nonempty(reader, env_key, os.environ[env], "the environment variable it names is set but empty")
    if file:
        return _nonempty(reader, file_key, _read_secret(reader, reader.folder(file_key), file, file_key),
                         "the file it names is empty")
    if key in reader.data:
        reader.used.add(key)
        reader.fail(key, f"secrets are not written in the config; use {env_key} or {file_key}" if key != "password"
                    else "passwords are not written in the config; use password_env or password_file")
    elif required:
        reader.fail(env_key, f"missing: set {env_key} or {file_key}")
    return None


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_SHOWN = "the value is not shown, in case it is a password"


def _unshown(reader: _Reader, key: str) -> str | None:
    """password_env or password_file as a string; unlike `_Reader.get`, a wrong type is not echoed."""
    reader.used.add(key)
    value = reader.data.get(key)
    if value is not None and not isinstance(value, str):
        reader.fail(key, f"expected a string ({_NOT_SHOWN})")
        return None
    return value


def _read_secret(reader: _Reader, base: Path, file: str, key: str = "password_file") -> str | None:
    """The secret in the file that `key` names, or None (said why, without the file's name)."""
    try:
        path = secret_path(base, file)
    except LookupError:
        reader.fail(key, "starts with $CREDENTIALS_DIRECTORY, which systemd sets only inside the service "
                                     "(LoadCredential=); outside it, set CREDENTIALS_DIRECTORY to the folder "
                                     "holding the files")
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the name
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text" \
            if isinstance(exc, UnicodeDecodeError) else "not a usable path"
        what = key.removesuffix("_file").replace("_", " ")
        reader.fail(key, f"names no file that can be read ({why}): it should be the path of a file "
                         f"holding the {what}, relative to {base}, not the {what} ({_NOT_SHOWN})")
        return None


CREDENTIALS_DIRECTORY = "$CREDENTIALS_DIRECTORY/"


def secret_path(base: Path, file: str) -> Path:
    """Where a password_file is: relative to the config's folder, or in systemd's credentials (LoadCredential=).

    Raises LookupError for `$CREDENTIALS_DIRECTORY/…` when that variable is not set.
    """
    if not file.startswith(CREDENTIALS_DIRECTORY):
        return base / file
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        raise LookupError("CREDENTIALS_DIRECTORY")
    return Path(folder) / file.removeprefix(CREDENTIALS_DIRECTORY)


def _nonempty(reader: _Reader, key: str, value: str | None, empty: str) -> Secret | None:
    """The password as a Secret; an empty one is a mistake, said as `empty`."""
    if value == "":
        reader.fail(key, empty)
    return Secret(value) if value else None


def _transport(reader: _Reader, default_port: int) -> dict[str, Any]:
    host = reader.get("host", str)
    ca_file = reader.get("ca_file", str, None)
    base = reader.folder("ca_file")
    if ca_file and not (base / ca_file).is_file():
        reader.fail("ca_file", f"no such file: {base / ca_file}")
    tls = reader.get("tls", str, "ssl" if default_port == 993 else "starttls")
    if tls not in TLS_MODES:
        reader.fail("tls", f"must be one of {', '.join(TLS_MODES)}, got {tls!r}")
    elif tls == "none" and host and host not in LOCAL_HOSTS and not reader.get("allow_plain", bool, False):
        reader.fail("tls", f"plain connections are only allowed to localhost, not {host!r} (passwords and mail "
                           f"would cross the network readable; set allow_plain = true if you really mean it)")
    else:
        reader.get("allow_plain", bool, False)
    port = reader.get("port", int, default_port if tls != "none" else None)
    return {"host": host, "port": port, "tls": tls, "ca_file": base / ca_file if ca_file else None}


AUTH_MODES = ("password", "oauth2")
PROVIDERS = ("microsoft", "google", "generic")
MICROSOFT = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/"
OUTLOOK = "https://outlook.office365.com/"
GRANTS = ("client_credentials", "refresh_token")
MECHANISMS = ("xoauth2", "oauthbearer")


def _auth(reader: _Reader, doc: TomlFile | Layered, problems: list[str], secrets: bool,
          shared: tuple[bool, OAuth2Config | None] = (False, None)) -> tuple[bool, OAuth2Config | None]:
    """Whether `auth = "oauth2"`, and the table's own `.oauth2` section, else the `shared` one (the mailbox's).

    The section is None when it has mistakes (reported); then nothing asks for a password instead.
    """
    oauth2 = reader.get("auth", str, "password", _choice(AUTH_MODES)) == "oauth2"
    reader.used.add("oauth2")
    section = f"{reader.table}.oauth2"
    if "oauth2" not in reader.data:
        if oauth2 and not shared[0]:
            reader.fail("auth", f"\"oauth2\" needs a [{section}] section (provider, client_id, ...)")
        return oauth2, shared[1] if oauth2 else None
    if not oauth2:
        reader.fail("auth", f"[{section}] is given: set auth = \"oauth2\" to use it, or remove it")
    return oauth2, _oauth2(_Reader(doc, section, problems), secrets)


def _oauth2(reader: _Reader, secrets: bool) -> OAuth2Config | None:
    """A `[mailbox.oauth2]` or `[smtp.oauth2]` section; the named providers' endpoints and scope derived."""
    provider = reader.get("provider", str, convert=_choice(PROVIDERS))
    grant = reader.get("grant", str, "client_credentials", _choice(GRANTS))
    tenant = reader.get("tenant", str, None)
    given = {key: reader.get(key, str, None) for key in ("token_url", "scope", "device_url", "authorize_url")}
    refresh_file = reader.get("refresh_token_file", str, None)
    mechanism = reader.get("mechanism", str, "xoauth2", _choice(MECHANISMS))
    client_id = reader.get("client_id", str)
    needs_secret = grant == "client_credentials" or provider == "google"
    secret = _secret(reader, required=needs_secret, resolve=secrets, key="client_secret")
    if provider == "microsoft" and not tenant:
        reader.fail("tenant", "missing: Microsoft needs the directory (tenant) id or domain, like \"contoso.com\"")
    if provider == "google" and grant == "client_credentials":
        reader.fail("grant", "Google gives IMAP and SMTP access to a user's token only: use grant = "
                             "\"refresh_token\" and run `inboxd auth login`")
    if provider == "generic" and not given["token_url"]:
        reader.fail("token_url", "missing: the generic provider needs the token endpoint's URL")
    if grant == "refresh_token" and not refresh_file:
        reader.fail("refresh_token_file", "missing: grant = \"refresh_token\" keeps the token that "
                                          "`inboxd auth login` gets in this file")
    reader.finish()
    if provider is None or client_id is None or grant is None:
        return None
    derived = named_endpoints(provider, tenant or "", grant)
    return OAuth2Config(
        provider=provider, client_id=client_id, grant=grant, client_secret=secret, tenant=tenant,
        token_url=given["token_url"] or derived.token_url, scope=given["scope"] or derived.scope,
        device_url=given["device_url"] or derived.device_url or None,
        authorize_url=given["authorize_url"] or derived.authorize_url or None,
        refresh_token_file=reader.folder("refresh_token_file") / refresh_file if refresh_file else None,
        mechanism=mechanism or "xoauth2")


@dataclass(frozen=True)
class Endpoints:
    """What a named provider derives: where tokens come from, and for what."""

    token_url: str
    device_url: str
    authorize_url: str
    scope: str


def named_endpoints(provider: str, tenant: str, grant: str) -> Endpoints:
    """The token and device endpoints and the scope for IMAP and SMTP of a named provider (generic: none)."""
    if provider == "microsoft":
        base = MICROSOFT.format(tenant=tenant)
        scope = f"{OUTLOOK}.default" if grant == "client_credentials" else \
            f"offline_access {OUTLOOK}IMAP.AccessAsUser.All {OUTLOOK}SMTP.Send"
        return Endpoints(base + "token", base + "devicecode", base + "authorize", scope)
    if provider == "google":  # its device flow refuses mail scopes: a browser sign-in instead
        return Endpoints("https://oauth2.googleapis.com/token", "", "https://accounts.google.com/o/oauth2/v2/auth",
                         "https://mail.google.com/")
    return Endpoints("", "", "", "")


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)} (not {value!r})")
        return value
    return check


def _duration(value: str) -> Duration:
    return parse_duration(value)


def _window(value: str) -> Duration:
    """The caps' window: wall-clock time, ten minutes at least (a zero window would switch every cap off)."""
    window = parse_duration(value)
    if window.business:
        raise ValueError(f"the window is wall-clock time (loops do not wait for office hours): {value!r}; try \"1h\"")
    minutes = window.amount * {"minutes": 1, "hours": 60, "days": 1440, "weeks": 10080}[window.unit]
    if minutes < 10:
        raise ValueError(f"too short to catch a loop: {value!r}; at least 10 minutes, e.g. \"1h\"")
    return window


SECTIONS = ("team", "queues", "mailbox", "smtp", "database", "paths", "calendar", "service", "commands", "limits",
            "log", "http")
SHARED = {"database": None, "log": None, "http": None, "paths": ("state", "teams")}  # one per deployment
TEAMS_FOLDER = "teams.d"


def load_config(path: Path, secrets: bool = True) -> Config:
    """Read and validate a config file of one team, reporting every problem at once (the first team of several).

    With secrets=False passwords are not read (for commands that never connect).
    """
    return load_teams(path, secrets)[0]


def load_teams(path: Path, secrets: bool = True) -> tuple[Config, ...]:
    """Every team of a deployment: each file in the teams folder over the shared config, or the config alone.

    All problems of all files at once; a reference prefix, alias or mailbox that two teams share is one.
    """
    shared = load_toml(path, ConfigError)
    paths = shared.data.get("paths")
    folder = path.parent / str(paths.get("teams", TEAMS_FOLDER) if isinstance(paths, dict) else TEAMS_FOLDER)
    # Any case of .toml (HR.TOML from another system is a team too, not left unwatched without a word);
    # a dot file is an editor's (.#hr.toml: Emacs's lock while hr.toml is being edited), not a team.
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".toml" and not p.name.startswith(".")) \
        if folder.is_dir() else []
    if not files:
        try:
            return (_load(path, shared, secrets),)
        except ConfigError as exc:
            if not folder.is_dir():
                raise
            # The teams' files moved away (or renamed hr.toml.off): the shared config is read as a team, and says so.
            raise ConfigError([*exc.problems, f"{folder}/: holds no team file (NAME.toml), so {path.name} alone "
                                              f"is read as the one team"]) from None
    teams, problems = [], []
    for file in files:
        try:
            teams.append(_load(path, Layered(load_toml(file, ConfigError), shared), secrets))
        except ConfigError as exc:
            problems.extend(exc.problems)
    seen: dict[tuple[str, str], Path] = {}
    for config in teams:
        assert config.team_file is not None
        for what, value in (("ref_prefix", config.team.ref_prefix.upper()), ("address", config.team.address),
                            ("mailbox", config.mailbox.label)):
            first = seen.setdefault((what, value), config.team_file)
            if first != config.team_file:
                problems.append(f"{config.team_file}: [{'mailbox' if what == 'mailbox' else 'team'}] "
                                f"{'user' if what == 'mailbox' else what}: {value!r} is already {first.name}'s: "
                                f"each team needs its own")
    shared_team = shared.data.get("team")
    alias = shared_team.get("address") if isinstance(shared_team, dict) else None
    if teams and not problems and alias and all(config.team.address != str(alias).lower() for config in teams):
        # Adding teams.d/hr.toml to a one-team config would otherwise stop watching help@ without a word.
        problems.append(f"{shared.where('team', 'address')}: [team] address: {alias!r} is no team's: with team "
                        f"files in {folder}, only they are teams; give this team a file of its own there "
                        f"(its [team] and [mailbox]), or remove the address here")
    if problems:
        raise ConfigError(problems)
    return tuple(teams)


def _load(path: Path, doc: TomlFile | Layered, secrets: bool) -> Config:
    """One team's config from its file (over the shared one)."""
    base = path.parent
    problems: list[str] = []
    _Reader(doc, "", problems).finish(list(SECTIONS))
    if isinstance(doc, Layered):
        for section, keys in SHARED.items():
            for key in keys or (None,):
                if _written(doc.top.data, section, key):
                    problems.append(f"{doc.top.where(section, key)}: [{section}]{f' {key}' if key else ''}: shared "
                                    f"by all teams: set it in {path.name}, not in a team's file")

    team_r = _Reader(doc, "team", problems)
    members = []
    for entry in team_r.get("members", list, []) or []:
        if not isinstance(entry, dict) or not _is_email(str(entry.get("email", ""))):
            team_r.fail("members", f"each member needs an email (and a name): {entry!r}")
            continue
        if set(entry) - {"email", "name"}:
            team_r.fail("members", f"unknown member keys {sorted(set(entry) - {'email', 'name'})}")
        email = entry["email"].lower()
        members.append(Member(email, str(entry.get("name") or email.split("@")[0])))
    team = TeamConfig(
        name=team_r.get("name", str), address=team_r.get("address", str, convert=_email),
        ref_prefix=team_r.get("ref_prefix", str, convert=_prefix),
        lead=team_r.get("lead", str, convert=_email), members=tuple(members),
        absent=tuple(str(a).lower() for a in team_r.get("absent", list, []) or []),
        language=team_r.get("language", str, "en", _language) or "en")
    for address in team.absent:
        if not team.member(address):
            team_r.fail("absent", f"{address!r} is not in [team] members")
    team_r.finish()

    queues_r = _Reader(doc, "queues", problems)
    queues: dict[str, tuple[str, ...]] = {}
    for name in queues_r.data:
        addresses = queues_r.get(name, list) or []
        for address in addresses:
            if not team.member(str(address)):
                queues_r.fail(name, f"{address!r} is not in [team] members")
        queues[name] = tuple(str(a).lower() for a in addresses)
    if "default" not in queues:
        queues_r.fail(None, "needs a \"default\" queue for mail no rule matches")

    mailbox_r = _Reader(doc, "mailbox", problems)
    mailbox_auth = _auth(mailbox_r, doc, problems, secrets)
    mailbox = MailboxConfig(
        **_transport(mailbox_r, 993), user=mailbox_r.get("user", str),
        password=_secret(mailbox_r, required=not mailbox_auth[0], resolve=secrets),
        oauth2=mailbox_auth[1],
        folder=mailbox_r.get("folder", str, "INBOX"),
        done_folder=mailbox_r.get("done_folder", str, None),
        attention_folder=mailbox_r.get("attention_folder", str, None),
        idle=mailbox_r.get("idle", bool, True),
        poll_seconds=mailbox_r.get("poll_seconds", int, 60, _positive),
        batch_size=mailbox_r.get("batch_size", int, 100, _positive),
        timeout_seconds=mailbox_r.get("timeout_seconds", int, 60, _positive),
        first_contact=mailbox_r.get("first_contact", str, "stop", _first_contact))
    mailbox_r.finish()

    smtp_r = _Reader(doc, "smtp", problems)
    smtp_oauth2, smtp_oauth2_config = _auth(smtp_r, doc, problems, secrets, shared=mailbox_auth)
    smtp = SmtpConfig(
        **_transport(smtp_r, 587), user=smtp_r.get("user", str, None),
        password=_secret(smtp_r, required=False, resolve=secrets), oauth2=smtp_oauth2_config,
        connections=smtp_r.get("connections", int, 1, _positive),
        max_attempts=smtp_r.get("max_attempts", int, 10, _positive),
        retry_seconds=smtp_r.get("retry_seconds", int, 30, _positive),
        max_retry_seconds=smtp_r.get("max_retry_seconds", int, 3600, _positive),
        timeout_seconds=smtp_r.get("timeout_seconds", int, 30, _positive))
    if smtp_oauth2 and not smtp.user:
        smtp_r.fail("user", "auth = \"oauth2\" needs the user to log in as (the mailbox's address)")
    elif secrets and smtp.user and not smtp.password and not smtp_oauth2 \
            and not {"password_env", "password_file"} & set(smtp_r.data):  # a named one unset is said there
        smtp_r.fail("user", "a user needs password_env or password_file")
    smtp_r.finish()

    db_r = _Reader(doc, "database", problems)
    url = db_r.get("url", str, "sqlite:///inboxd.db", _database_url)
    db_r.finish()
    if url and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        relative = url.removeprefix("sqlite:///")
        url = "sqlite:///" + str(base / relative) if relative != ":memory:" else url

    paths_r = _Reader(doc, "paths", problems)
    rules_dir = paths_r.folder("rules") / paths_r.get("rules", str, "rules")
    templates_dir = paths_r.folder("templates") / paths_r.get("templates", str, "templates")
    state = paths_r.get("state", str, None)
    paths_r.get("teams", str, TEAMS_FOLDER)  # read by load_teams
    paths_r.finish()

    cal_r = _Reader(doc, "calendar", problems)
    hours = cal_r.get("hours", str, "09:00-17:30", parse_hours)
    calendar = BusinessCalendar(
        tz=cal_r.get("timezone", str, "UTC", _zone) or ZoneInfo("UTC"),
        workdays=cal_r.get("workdays", str, "mon-fri", parse_workdays) or frozenset(range(5)),
        opens=hours[0] if hours else parse_hours("09:00-17:30")[0],
        closes=hours[1] if hours else parse_hours("09:00-17:30")[1],
        country=cal_r.get("holidays", str, None, _country),
        extra_holidays=frozenset(cal_r.get("extra_holidays", list, [], _dates) or ()))
    cal_r.finish()

    svc_r = _Reader(doc, "service", problems)
    service = ServiceConfig(
        default_due=svc_r.get("default_due", str, "3 business days", _duration),
        remind_owner_before=svc_r.get("remind_owner_before", str, "4 business hours", _duration),
        notify_requester_before=svc_r.get("notify_requester_before", str, "1 business hour", _duration),
        update_every=svc_r.get("update_every", str, "3 business days", _duration),
        reopen_window=svc_r.get("reopen_window", str, "5 days", _duration),
        survey=svc_r.get("survey", bool, True),
        announce_new=svc_r.get("announce_new", bool, True),
        digest=svc_r.get("digest", (str, bool), "mon 08:00", _weekly))
    svc_r.finish()

    cmd_r = _Reader(doc, "commands", problems)
    commands = CommandsConfig(require_secret=cmd_r.get("require_secret", bool, True),
                              authserv_id=cmd_r.get("authserv_id", str, None) or None)
    cmd_r.finish()

    lim_r = _Reader(doc, "limits", problems)
    limits = LimitsConfig(
        automatic_per_sender=lim_r.get("automatic_per_sender", int, 20, _positive),
        automatic_window=lim_r.get("automatic_window", str, "1h", _window),
        mails_per_item=lim_r.get("mails_per_item", int, 30, _positive),
        max_message_bytes=lim_r.get("max_message_size", str, "25MB", parse_size))
    lim_r.finish()

    log_r = _Reader(doc, "log", problems)
    log_format = log_r.get("format", str, "text", _log_format)
    log_r.finish()
    http_r = _Reader(doc, "http", problems)
    listen = http_r.get("listen", str, None, _listen)
    http_r.finish()

    if problems:
        raise ConfigError(problems)
    return Config(path, team, queues, mailbox, smtp, url, rules_dir, templates_dir, calendar, service, commands,
                  limits, base / state if state else None, log_format=log_format, http_listen=listen,
                  team_file=doc.path if isinstance(doc, Layered) else None)


def _written(data: dict[str, Any], section: str, key: str | None) -> bool:
    """Whether a file writes `[section]` (or its `key`)."""
    table = data.get(section)
    return table is not None and (key is None or (isinstance(table, dict) and key in table))


def _first_contact(value: str) -> str:
    if value not in ("stop", "all"):
        raise ValueError(f"must be \"stop\" (say what is there and wait for `inboxd adopt`) or \"all\" "
                         f"(track every mail already there), got {value!r}")
    return value


def _language(value: str) -> str:
    if not languages.known(value):
        raise ValueError(f"not a language tag Babel knows: {value!r} (like \"en\", \"de\" or \"pt-BR\")")
    return value


def _prefix(value: str) -> str:
    if not value.isalnum() or not value.isascii():
        raise ValueError(f"must be letters and digits only, like \"IT\", got {value!r}")
    return value.upper()


def parse_size(text: str | int) -> int:
    """`25MB`, `500kB`, `1000` -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)i?b?\s*", str(text), re.I)
    if not match:
        raise ValueError(f"not a size: {text!r} (try \"10MB\" or \"500kB\")")
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2).lower() or " ")


def _weekly(value: str | bool) -> Weekly | None:
    if value is True:
        raise ValueError("write a weekday and time like \"mon 08:00\", or false for no digest")
    return parse_weekly(value) if value is not False else None


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise ValueError(f"unknown format {value!r}: use {' or '.join(LOG_FORMATS)}")
    return value


def _database_url(value: str) -> str:
    if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ValueError(f"must start with sqlite:/// or postgresql://, got {shown_url(value)!r}")
    host = value.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    port = host.rpartition("]")[2].partition(":")[2]
    if port and not port.isdigit():  # found here, not as a traceback at the first connect
        raise ValueError(f"the port is not a number in {shown_url(value)!r}")
    return value


def _listen(value: str) -> tuple[str, int]:
    """`127.0.0.1:9425` or `[::1]:9425` -> (host, port)."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, like \"127.0.0.1:9425\", got {value!r}")
    return host.strip("[]"), int(port)


def _zone(value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r} (try \"Europe/Berlin\")") from None


def _country(value: str) -> str:
    import holidays
    country, _, region = value.partition("-")
    try:
        holidays.country_holidays(country, subdiv=region or None)
    except NotImplementedError:
        raise ValueError(f"unknown country or region {value!r} (try \"DE\" or \"DE-BY\")") from None
    return value


def _dates(values: list) -> list[date]:
    try:
        return [v if isinstance(v, date) else date.fromisoformat(str(v)) for v in values]
    except ValueError:
        raise ValueError(f"dates must be written as 2026-12-24, got {values!r}") from None


def default_config_path() -> Path:
    """`$INBOXD_CONFIG` or ./config.toml."""
    return Path(os.environ.get("INBOXD_CONFIG", "config.toml"))
