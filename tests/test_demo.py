"""`inboxd demo`, the README's first command: the whole flow on embedded servers, narrated."""

import subprocess
import sys


def test_demo_runs_the_whole_flow_and_a_conversation():
    result = subprocess.run([sys.executable, "-m", "inboxd.cli", "demo"], capture_output=True, text=True,
                            timeout=120)
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    assert "-> item IT-1 created" in out and "-> redirected" in out and "-> declined" in out
    assert "-> skipped" in out and "auto-submitted" in out
    for member in ("ana@example.org", "bo@example.org"):  # each their own copy, with their own reply address
        assert f"mail to {member}: [IT-4] New request: New monitor for the reception desk" in out
    assert "IT-4, command" in out and "#take: assigned to ana@example.org" in out
    assert "mail to ines.dahl@example.org: [IT-4] New date for New monitor for the reception desk" in out
    assert "IT-4, reply" in out and "mail to ana@example.org: [IT-4] Reply from Ines Dahl" in out
    assert "mail to ines.dahl@example.org: [IT-4] Done: New monitor for the reception desk" in out
    assert "IT-4, rating" in out and "satisfaction 5 of 5" in out
    assert "0 left in INBOX" in out
    # Then time passes: the owner is reminded and the requester told before the date, the lead alerted after it.
    assert "owner reminder   IT-3   to ana@example.org" in out
    assert "mail to ana@example.org: [IT-3] Due " in out
    assert "mail to mira@board.example.org: [IT-3] About the date for Outage" in out
    assert "mail to lead@example.org: [IT-3] Missed date: Outage: email is down in the board room" in out
