"""Real local mail servers (SMTP capture, Dovecot, pymap) on free 127.0.0.1 ports.

aiosmtpd and pymap come with the ``demo`` extra, not with a plain install: importing this package
needs neither; starting an SMTP capture needs aiosmtpd, a PymapServer needs pymap.
"""

from importlib.util import find_spec

from .base import HOST, free_port
from .imap import (
           DovecotServer,
           ImapServer,
           PymapServer,
           append_messages,
           imap_server_for_tests,
)
from .smtp import CapturedMail, SmtpCapture, SmtpProcess, count_files

DEMO_PACKAGES = ("aiosmtpd", "pymap")


def missing_demo_packages() -> list[str]:
    """The demo extra's packages that are not installed (none after ``pip install 'inboxd[demo]'``)."""
    return [name for name in DEMO_PACKAGES if find_spec(name) is None]


__all__ = ["HOST", "CapturedMail", "DovecotServer", "ImapServer", "PymapServer", "SmtpCapture", "SmtpProcess",
           "append_messages", "count_files", "free_port", "imap_server_for_tests", "missing_demo_packages"]
