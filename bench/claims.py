"""The cost of a claim on PostgreSQL when the teams take turns (issue 17 review), against a claim by id alone.

A worker's delivery claims each mail with `OutboxSender._claim`: `… FOR UPDATE SKIP LOCKED` on the oldest
due mail of its teams, or, once a team was served in the round, of the teams not served yet first
(`ORDER BY team IN (served), id`), so that one team's backlog does not hold up the others' mail. That
order costs a sort of the due rows at each claim. Measured here with one team's backlog of `--due` mails
and another team's 3, on a throwaway PostgreSQL: the median time of a claim in its transaction (rolled
back, so each claim sees the same rows), by id alone (the baseline, as before the turns), with turns,
and with turns when no other team has mail due (two queries: the others', then by id).

    python bench/claims.py                  # 10,000 due
    python bench/claims.py --due 1000 --claims 100

Needs root and PostgreSQL's server binaries (as the tests do).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from postgres import PostgresServer  # noqa: E402

from inboxd.clock import SystemClock  # noqa: E402
from inboxd.config import SmtpConfig  # noqa: E402
from inboxd.models import Outbox, db, open_database  # noqa: E402
from inboxd.outbox import OutboxSender  # noqa: E402


def backlog(due: int) -> None:
    """`due` pending mails of team T1, then 3 of team T2."""
    now = datetime.now(UTC)
    rows = [dict(team=team, kind="note", recipients=["p@example.org"], sender=f"{team}@example.org", subject="s",
                 message_id=f"<{team}.{n}@example.org>", raw=b"x" * 2000, recipient="p@example.org",
                 next_attempt_at=now, created_at=now) for team, count in (("T1", due), ("T2", 3)) for n in range(count)]
    with db.atomic():
        for start in range(0, len(rows), 500):
            Outbox.insert_many(rows[start:start + 500]).execute()
    db.execute_sql("ANALYZE outbox")


def claim_ms(sender: OutboxSender, teams: list[str], served: set[str], claims: int) -> float:
    """The median milliseconds of one claim, each in a transaction rolled back."""
    times = []
    for _ in range(claims):
        with db.atomic() as transaction:
            started = time.perf_counter()
            row = sender._claim(teams, set(), served)
            times.append((time.perf_counter() - started) * 1000)
            assert row is not None and row.team == ("T2" if served == {"T1"} and "T2" in teams else "T1")
            transaction.rollback()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--due", type=int, default=10_000, help="team T1's backlog (default: 10,000)")
    parser.add_argument("--claims", type=int, default=200, help="claims timed per order (default: 200)")
    args = parser.parse_args()
    with PostgresServer() as server:
        open_database(server.create_database("inboxd_claims"))
        backlog(args.due)
        sender = OutboxSender([], SystemClock(), SmtpConfig(host="localhost", port=25, tls="none"))
        by_id, turns, alone = [], [], []
        for _ in range(3):  # alternated, so that a burst of the machine's other work is not one order's alone
            by_id.append(claim_ms(sender, ["T1", "T2"], set(), args.claims))
            turns.append(claim_ms(sender, ["T1", "T2"], {"T1"}, args.claims))
            alone.append(claim_ms(sender, ["T1", "T3"], {"T1"}, args.claims))  # T3 has none due
        db.close()
    print(f"{args.due} mails of one team due, 3 of another; median of {args.claims} claims, 3 runs each:")
    print(f"  by id alone (before):  {' / '.join(f'{ms:.2f}' for ms in by_id)} ms a claim; the other team's first "
          f"mail is claim {args.due + 1}")
    print(f"  teams taking turns:    {' / '.join(f'{ms:.2f}' for ms in turns)} ms a claim; the other team's first "
          f"mail is claim 2")
    print(f"  turns, no other due:   {' / '.join(f'{ms:.2f}' for ms in alone)} ms a claim (the others asked first, "
          f"then by id)")


if __name__ == "__main__":
    main()
