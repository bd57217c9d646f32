"""Issue 15, item 1: a mail whose EXISTS comes together with IDLE's answer is seen at once, not at the next sweep.

A proxy between inboxd and Dovecot holds the server's "+ idling" until the server has more to say,
so both reach inboxd in one piece: the EXISTS then sits in imaplib's buffer, where select() on the
socket cannot see it.
"""

from __future__ import annotations

import threading
import time

from helpers import make_mail, write_config
from tcpproxy import HoldingProxy

from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.source import ImapSource
from inboxd.servers import append_messages


def test_a_mail_arriving_with_idles_answer_is_acknowledged_within_two_seconds(tmp_path, mailbox, smtp_capture):
    proxy = HoldingProxy(mailbox.port)
    config = load_config(write_config(tmp_path, imap_port=proxy.port, smtp_port=smtp_capture.port,
                                      imap_user=mailbox.user, imap_password=mailbox.password))
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert proxy.holding.wait(30), "inboxd never started to IDLE"
        append_messages(mailbox, [make_mail("rosa@example.org", "Printer jams", "The printer jams.")])
        assert proxy.released.wait(10), "Dovecot said nothing to the idling connection"
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not any("rosa@example.org" in m.rcpt_tos for m in smtp_capture.messages):
            time.sleep(0.05)
        assert any("rosa@example.org" in m.rcpt_tos for m in smtp_capture.messages), \
            "the mail waited: its EXISTS stayed in the buffer"
    finally:
        daemon.stop()
        thread.join(30)
        proxy.close()


def test_a_mail_told_in_answer_to_another_command_is_looked_for_before_idling(tmp_path, mailbox):
    """Dovecot tells of new mail once, at the end of whatever command runs (`* SEARCH` then `* 1 EXISTS`).

    imaplib files that line away; idling after it, inboxd waited for the next push or the sweep
    (issue 15: 10 s and 56 s in the latency bench). Now the wait ends before IDLE is even sent.
    """
    config = load_config(write_config(tmp_path, imap_port=mailbox.port, imap_user=mailbox.user,
                                      imap_password=mailbox.password))
    source = ImapSource(config.mailbox)
    source.open()
    try:
        assert source.new_uids(0) == []
        append_messages(mailbox, [make_mail("rosa@example.org", "Printer jams", "The printer jams.")])
        assert source.sizes([999]) == {}  # any command: Dovecot's answer tells of the new mail
        idled: list[bool] = []
        client = source.client
        real_idle = client.idle
        client.idle = lambda: (idled.append(True), real_idle())[1]  # a spy: IDLE still goes to Dovecot if sent
        source.wait(120, threading.Event())
        assert idled == [], "the wait went to IDLE although the server had told of new mail"
        assert len(source.new_uids(0)) == 1
    finally:
        source.close()


def test_what_the_server_tells_unasked_does_not_pile_up_for_the_life_of_the_connection(tmp_path, mailbox):
    """imaplib keeps every untagged line nobody reads: an EXPUNGE per mail moved, for months of one connection,
    or 20,000 in one `ingest` of a backlog (issue 15); that new mail came (EXISTS) is kept for `wait`."""
    config = load_config(write_config(tmp_path, imap_port=mailbox.port, imap_user=mailbox.user,
                                      imap_password=mailbox.password))
    source = ImapSource(config.mailbox)
    source.open()
    try:
        for round_ in range(3):
            append_messages(mailbox, [make_mail(f"p{n}@example.org", f"Round {round_} mail {n}", "x") for n in range(5)])
            source.client.noop()  # the session sees the new mail (a SEARCH runs on the folder as last seen)
            uids = source.new_uids(0)
            assert len(source.fetch(uids)) == 5
            if round_ == 2:
                append_messages(mailbox, [make_mail("late@example.org", "Told in the answer to a move", "x")])
            source.mark_done(uids)
            kept = source.client._imap.untagged_responses
            assert "EXPUNGE" not in kept  # let go of at each move, not kept until the next look for mail
        assert "EXISTS" in kept  # the late mail, told in the last move's answer: `wait` looks for it at once
        assert len(source.new_uids(0)) == 1
    finally:
        source.close()
