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
    assert "IT-1, command" in out and "#take: assigned to" in out
    assert "[IT-1] New date for Printer on floor 3 keeps jamming" in out
    assert "IT-1, reply" in out and "IT-1, rating" in out and "satisfaction 5 of 5" in out
    assert "[IT-1] Done: Printer on floor 3 keeps jamming" in out
    assert "0 left in INBOX" in out
