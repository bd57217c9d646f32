"""A simulated month of 1,000 requests with everything the figures count: for `stats` and the report.

Requests arrive over three weeks; members answer, take, move dates (in time and too late),
confirm and then forget, decline, redirect, ask and wait, and close; requesters rate and reopen; inboxd sends
its acknowledgements, notices and status updates through the outbox, on a fixed clock with a
sweep every hour. Most acknowledgements leave at once; a few wait for the next sweep, and for three
days in the second week the SMTP server is away: what is queued then leaves when it is back.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

from helpers import make_mail, write_config

from inboxd import queries
from inboxd.clock import FixedClock
from inboxd.config import Config, load_config
from inboxd.daemon import Daemon
from inboxd.models import Item
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource
from inboxd.threads import secret_address

BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 11, 2, 0, 0, tzinfo=BERLIN)  # a Monday
END = START + timedelta(days=28)
REQUESTS = 1000
SWEEP = timedelta(hours=1)
SMTP_AWAY = (START + timedelta(days=9, hours=9), START + timedelta(days=12, hours=9))  # Wed 09:00 to Sat 09:00
_ids = itertools.count(1)


@dataclass
class Month:
    """The simulated month's config, its end (the figures' "now") and what the simulation did."""

    config_path: Path
    config: Config
    now: datetime
    did: dict[str, int] = field(default_factory=dict)  # counts of what the members and requesters did


Step = tuple[datetime, Callable[[], bytes | None]]


def simulate(directory: Path, requests: int = REQUESTS, database_url: str | None = None) -> Month:
    """Build the month's database in `directory` (or at `database_url`); return its config and a tally."""
    path = write_config(directory, extra="\n[service]\ndigest = false\n")
    if database_url:
        path.write_text(path.read_text().replace('url = "sqlite:///inboxd.db"', f'url = "{database_url}"'))
    config = load_config(path)
    clock = FixedClock(START)
    daemon = Daemon(config, clock=clock, source=FakeSource(), transport=FakeTransport())
    rng = random.Random(16)
    did: dict[str, int] = {}
    steps: list[Step] = []
    arrivals = sorted(START + timedelta(minutes=rng.randrange(21 * 24 * 60)) for _ in range(requests))
    for n, arrival in enumerate(arrivals, 1):
        steps.append((arrival, _request(n)))
        steps += _story(rng, daemon, n, arrival, did)
    steps.sort(key=lambda step: step[0])
    slow_acks = set(rng.sample(range(requests), requests // 20))  # the SMTP server away: these wait for the sweep

    pending, index = iter(steps), 0
    upcoming = next(pending, None)
    while clock.now() < END:
        hour_end = clock.now() + SWEEP
        while upcoming is not None and upcoming[0] < hour_end:
            clock.moment = upcoming[0]
            mail = upcoming[1]()
            if mail is not None:
                assert daemon.pipeline.process(mail).kind != "parked"
                index += 1
                if index not in slow_acks and not SMTP_AWAY[0] <= clock.now() < SMTP_AWAY[1]:
                    daemon.sender.drain()
            upcoming = next(pending, None)
        clock.moment = hour_end
        daemon.sweep()
        if not SMTP_AWAY[0] <= clock.now() < SMTP_AWAY[1]:
            daemon.sender.drain()
    return Month(path, config, END, did)


def _request(n: int) -> Callable[[], bytes]:
    return lambda: make_mail(f"user{n}@example.org", f"Question {n} about my setup", f"Please help with {n}.")


def _story(rng: random.Random, daemon: Daemon, n: int, arrival: datetime, did: dict[str, int]) -> list[Step]:
    """What happens to request n after it arrives: the member's mails and the requester's."""
    member = "ana@example.org" if n % 2 else "bo@example.org"

    def later(low: float, high: float) -> datetime:
        return arrival + timedelta(hours=rng.uniform(low, high))

    def says(body: str, kind: str) -> Callable[[], bytes | None]:
        def mail() -> bytes | None:
            item = Item.get_or_none(Item.requester == f"user{n}@example.org")
            if item is None:
                return None
            did[kind] = did.get(kind, 0) + 1
            to = secret_address(daemon.config.team, queries.view(item), member)
            return _reply(member, to, f"Re: [IT-{item.id}] Question {n} about my setup", body)
        return mail

    def requester(body: str, kind: str) -> Callable[[], bytes | None]:
        def mail() -> bytes | None:
            item = Item.get_or_none(Item.requester == f"user{n}@example.org")
            if item is None or item.status != "done":
                return None
            did[kind] = did.get(kind, 0) + 1
            return _reply(f"user{n}@example.org", "help@example.org",
                          f"Re: [IT-{item.id}] Question {n} about my setup", body)
        return mail

    choice, steps = rng.random(), []
    done_at = None
    if choice < 0.25:
        steps += [(later(0.5, 30), says("#take\nLooking into it now.", "take")),
                  (done_at := later(31, 120), says("#done Replaced the cable.", "done"))]
    elif choice < 0.40:
        steps.append((done_at := later(1, 60), says("#done Fixed it.", "done")))
    elif choice < 0.50:
        steps += [(later(1, 20), says("#eta +5d the part is on back order", "eta_in_time")),
                  (done_at := later(100, 160), says("#done The part came.", "done"))]
    elif choice < 0.55:
        steps += [(later(130, 200), says("#eta +3d sorry, this took longer", "eta_late")),
                  (done_at := later(210, 300), says("#done Finally done.", "done"))]
    elif choice < 0.65:
        steps += [(later(1, 10), says("#ontrack", "ontrack")),
                  (done_at := later(150, 250), says("#done Done at last.", "done"))]
    elif choice < 0.70:
        steps.append((later(1, 40), says("#decline We only support company laptops.", "decline")))
    elif choice < 0.73:
        steps.append((later(1, 40), says("#redirect payroll@example.org this is about pay", "redirect")))
    elif choice < 0.76:  # a question the requester never answers: the clock stands still, and no update goes
        steps.append((later(1, 30), says("#waiting Could you send a photo of the error?", "waiting")))
    if done_at is not None:
        after = rng.random()
        if after < 0.5:
            score = rng.choice([1, 2, 3, 4, 4, 5, 5, 5])
            steps.append((done_at + timedelta(hours=rng.uniform(1, 40)), requester(f"{score}", f"rated_{score}")))
        elif after < 0.56:
            steps.append((done_at + timedelta(hours=rng.uniform(1, 20)),
                          requester("It is broken again, same problem.", "reopen")))
    return steps


def _reply(sender: str, to: str, subject: str, body: str) -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, to, subject
    mail["Message-ID"] = f"<sim-{next(_ids)}@example.org>"
    mail.set_content(body)
    return mail.as_bytes()
