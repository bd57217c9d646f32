"""A config for inboxd against mail servers on this machine: used by the demo, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

# The default rules, templates, example config and systemd unit: package data in an install; in a source
# checkout, links to the top-level rules/, templates/ and config.example.toml (one copy of each).
SHIPPED = Path(__file__).resolve().parent / "shipped"

TEMPLATE = """\
[team]
name = "IT Help"
address = "help@example.org"
ref_prefix = "IT"
lead = "lead@example.org"
members = [{{ email = "ana@example.org", name = "Ana" }}, {{ email = "bo@example.org", name = "Bo" }}]

[queues]
default = ["ana@example.org", "bo@example.org"]
ops = ["ana@example.org"]
facilities = {facilities}

[mailbox]
host = "127.0.0.1"
port = {imap_port}
tls = "none"
user = "{imap_user}"
password_file = "imap-password"
done_folder = "Processed"
batch_size = {batch_size}
first_contact = "all"  # the demo's and tests' mailboxes: every mail in them is new

[smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
retry_seconds = {retry_seconds}

[database]
url = "sqlite:///inboxd.db"

[paths]
rules = "{rules}"
templates = "{templates}"

[calendar]
timezone = "Europe/Berlin"
holidays = "DE"
{extra}
"""


def write_local_config(directory: Path, imap_port: int, smtp_port: int, imap_user: str,
                       imap_password: str, rules: Path | None = None, templates: Path | None = None,
                       batch_size: int = 100, retry_seconds: int = 30, extra: str = "",
                       facilities: tuple[str, ...] = ("bo@example.org",)) -> Path:
    """Write config.toml (and the IMAP password file beside it) into `directory`; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "imap-password").write_text(imap_password)
    path = directory / "config.toml"
    path.write_text(TEMPLATE.format(
        imap_port=imap_port, smtp_port=smtp_port, imap_user=imap_user, batch_size=batch_size,
        retry_seconds=retry_seconds, rules=rules or (SHIPPED / "rules").resolve(),
        templates=templates or (SHIPPED / "templates").resolve(), extra=extra,
        facilities="[" + ", ".join(f'"{a}"' for a in facilities) + "]"))
    return path
