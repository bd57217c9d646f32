"""Credentials checked before they matter: `check` names a missing password, `check --connect` logs in to
IMAP and SMTP (on Dovecot and aiosmtpd) and sends nothing, and repeated refused logins stop `run` with
exit 3 while a network outage is still retried."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from click.testing import CliRunner
from inboxd import daemon as daemon_module
from inboxd.cli import cli
from inboxd.daemon import Daemon
from inboxd.errors import LoginsRefused, SmtpLoginRefused, SourceError
from inboxd.models import Outbox
from inboxd.outbox import FakeTransport
from inboxd.servers import SmtpCapture, free_port
from inboxd.source import FakeSource

from helpers import make_mail, write_config

WRONG = "Wr0ng-Passw0rd-8812"


def check(path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(path), "check", *args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_check_names_a_password_variable_that_is_not_set_and_a_file_that_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("INBOXD_TEST_IMAP_PASSWORD", raising=False)
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('password_file = "imap-password"',
                                             'password_env = "INBOXD_TEST_IMAP_PASSWORD"')
                    .replace("[smtp]\n", '[smtp]\nuser = "help"\npassword_file = "secrets/smtp"\n'))
    code, out = check(path)
    assert code == 1
    assert "[mailbox] password_env: names no environment variable that is set" in out
    assert "[smtp] password_file: names no file that can be read (No such file or directory)" in out
    monkeypatch.setenv("INBOXD_TEST_IMAP_PASSWORD", "secret")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "smtp").write_text("smtp-secret")
    assert check(path)[0] == 0


# --- check --connect on the real servers ---------------------------------------------------------

def connect_config(tmp_path, mailbox, smtp_port: int, password: str | None = None, smtp_login: str = ""):
    path = write_config(tmp_path, imap_port=mailbox.port, smtp_port=smtp_port, imap_user=mailbox.user,
                        imap_password=password or mailbox.password)
    if smtp_login:
        (tmp_path / "smtp-password").write_text(smtp_login)
        login = '[smtp]\nuser = "help"\npassword_file = "smtp-password"\n'
        path.write_text(path.read_text().replace("[smtp]\n", login))
    return path


def test_check_connect_logs_in_to_both_and_changes_nothing(tmp_path, mailbox, smtp_capture):
    code, out = check(connect_config(tmp_path, mailbox, smtp_capture.port), "--connect")
    assert code == 0, out
    assert f"IMAP ok: logged in as 'inboxd' on 127.0.0.1:{mailbox.port} (none, password); the folder 'INBOX' " \
           "holds 0 mail(s); 'Processed' will be created at the first run" in out
    assert f"SMTP ok: connected on 127.0.0.1:{smtp_capture.port} (none, no login); nothing sent" in out
    assert not smtp_capture.messages
    with mailbox.connect() as client:
        assert not client.folder_exists("Processed")  # a check creates nothing


@pytest.mark.server
def test_check_connect_says_which_login_was_refused_exit_1_no_secret_shown(tmp_path, mailbox):
    with SmtpCapture(login=("help", "smtp-secret")) as smtp:
        code, out = check(connect_config(tmp_path, mailbox, smtp.port, password=WRONG, smtp_login="smtp-secret"),
                          "--connect")
        assert code == 1
        assert f"IMAP failed: IMAP: login as 'inboxd' on 127.0.0.1:{mailbox.port} was refused: " \
               "[AUTHENTICATIONFAILED] Authentication failed." in out
        assert f"SMTP ok: logged in as 'help' on 127.0.0.1:{smtp.port} (none, password); nothing sent" in out
        code, out = check(connect_config(tmp_path, mailbox, smtp.port, smtp_login=WRONG), "--connect")
        assert code == 1 and "IMAP ok: logged in as 'inboxd'" in out
        assert f"SMTP failed: SMTP: login as 'help' on 127.0.0.1:{smtp.port} was refused: 535 5.7.8 " \
               "Authentication credentials invalid" in out
        assert WRONG not in out and not smtp.messages


def test_check_connect_says_when_a_server_cannot_be_reached(tmp_path, mailbox):
    port = free_port()  # nobody listens there
    code, out = check(connect_config(tmp_path, mailbox, port), "--connect")
    assert code == 1 and "IMAP ok" in out
    assert f"SMTP failed: SMTP: 127.0.0.1:{port} (none): ConnectionRefusedError: [Errno 111] Connection refused" in out


def test_run_stops_with_exit_3_when_the_imap_login_is_refused_again_and_again(tmp_path, mailbox, smtp_capture):
    path = connect_config(tmp_path, mailbox, smtp_capture.port, password=WRONG)
    result = subprocess.run([sys.executable, "-m", "inboxd.cli", "--config", str(path), "run"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "trying again (1 of 3)" in result.stderr and "trying again (2 of 3)" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: IMAP: login as 'inboxd'") and "refused 3 times in a row, so inboxd stops " \
           "rather than risk locking the account" in last
    assert "Traceback" not in result.stderr and WRONG not in result.stderr


# --- the daemon's count of refusals, on fakes ----------------------------------------------------

class Outage(FakeSource):
    """A server that cannot be reached for its first `down` connections."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down

    def open(self) -> int:
        if self.down:
            self.down -= 1
            raise SourceError("IMAP: cannot connect to 127.0.0.1:993 (ssl): ConnectionRefusedError")
        return super().open()


def watch(config, clock, source: FakeSource, monkeypatch) -> tuple[Daemon, threading.Thread]:
    """The daemon running on `source` with short backoffs, stopped once it has read a mail."""
    monkeypatch.setattr(daemon_module, "MAX_BACKOFF_SECONDS", 0.01)
    daemon = Daemon(config, clock=clock, source=source, transport=FakeTransport())
    daemon._backoff = 0.01
    daemon.listeners.append(lambda outcome: daemon.stop())
    source.add([make_mail("rosa@example.org", "Printer jammed")])
    failure: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(daemon.run, failure))
    thread.start()
    thread.join(30)
    if thread.is_alive():
        daemon.stop()
        raise AssertionError("the daemon neither read the mail nor stopped within 30 s")
    return daemon, failure[0] if failure else None


def _catch(run, failure: list) -> None:
    try:
        run()
    except BaseException as exc:
        failure.append(exc)


def test_three_refused_logins_in_a_row_stop_the_daemon_with_exit_code_3(config, clock, monkeypatch):
    source = FakeSource(refuse_logins=5)
    daemon, failure = watch(config, clock, source, monkeypatch)
    assert isinstance(failure, LoginsRefused) and failure.exit_code == 3
    assert "refused 3 times in a row" in str(failure) and source.refuse_logins == 2  # no fourth try
    assert source.mails  # nothing was read


def test_two_refusals_then_a_login_go_on(config, clock, monkeypatch):
    source = FakeSource(refuse_logins=2)
    daemon, failure = watch(config, clock, source, monkeypatch)
    assert failure is None and source.done == [1] and not daemon.refused


def test_a_network_outage_is_no_refusal_and_is_retried_however_long(config, clock, monkeypatch):
    source = Outage(down=8)
    daemon, failure = watch(config, clock, source, monkeypatch)
    assert failure is None and source.done == [1] and not daemon.refused


def test_the_outbox_refused_three_times_stops_the_daemon_and_the_mail_waits(fake_daemon, clock):
    refused = SmtpLoginRefused("SMTP: login as 'help' was refused")
    fake_daemon.sender.transports[0] = transport = FakeTransport(failures=[refused] * 12)
    fake_daemon.source.add([make_mail("rosa@example.org", "Printer jammed")])
    fake_daemon.ingest(fake_daemon.source.open())
    for _ in range(3):
        fake_daemon.sender.drain()
        clock.advance(timedelta(hours=1))
    assert fake_daemon.stopping.is_set() and "refused 3 times in a row" in fake_daemon.refused
    for _ in range(9):  # `once` from cron, say: more refusals than max_attempts (10)
        fake_daemon.sender.drain()
        clock.advance(timedelta(hours=1))
    assert not transport.sent and not transport.failures
    assert {row.status for row in Outbox.select()} == {"pending"}  # never dead: no fault of the mail


def test_a_refusal_then_a_mail_sent_starts_the_count_again(fake_daemon, clock):
    refused = SmtpLoginRefused("SMTP: login as 'help' was refused")
    fake_daemon.sender.transports[0] = FakeTransport(failures=[refused, refused])
    fake_daemon.source.add([make_mail("rosa@example.org", "Printer jammed")])
    fake_daemon.ingest(fake_daemon.source.open())
    for _ in range(4):
        fake_daemon.sender.drain()
        clock.advance(timedelta(hours=1))
    fake_daemon.sender.transports[0].failures += [refused, refused]
    fake_daemon.source.add([make_mail("bo@example.net", "Monitor flickers", "It flickers.")])
    fake_daemon.ingest(fake_daemon.source.open())
    for _ in range(4):
        fake_daemon.sender.drain()
        clock.advance(timedelta(hours=1))
    assert not fake_daemon.stopping.is_set() and not fake_daemon.refused
