"""Real local mail servers (SMTP capture, Dovecot, pymap) on free 127.0.0.1 ports."""

from .base import HOST, free_port
from .imap import (
           DovecotServer,
           ImapServer,
           PymapServer,
           append_messages,
           imap_server_for_tests,
)
from .smtp import CapturedMail, SmtpCapture, SmtpProcess, count_files

__all__ = ["HOST", "CapturedMail", "DovecotServer", "ImapServer", "PymapServer", "SmtpCapture", "SmtpProcess",
           "append_messages", "count_files", "free_port", "imap_server_for_tests"]
