"""A simulated month of 1,000 requests: no open request is ever silent longer than `update_every`."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from helpers import make_mail, write_config

from inboxd.clock import FixedClock
from inboxd.config import load_config
from inboxd.daemon import Daemon
from inboxd.models import Item, Notice, Outbox
from inboxd.outbox import FakeTransport
from inboxd.source import FakeSource

BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 11, 2, 0, 0, tzinfo=BERLIN)  # a Monday
END = START + timedelta(days=30)
SWEEP = timedelta(hours=1)
REQUESTS = 1000


def owner_mails(rng: random.Random, number: int, arrival: datetime) -> list[tuple[datetime, bytes]]:
    """What Ana does about one request: nothing at all, a word for the requester, a new date, or #done."""
    subject = f"Re: [IT-{number}] Question {number} about my setup"
    choice = rng.random()

    def later(low_hours: float, high_hours: float) -> datetime:
        return arrival + timedelta(hours=rng.uniform(low_hours, high_hours))

    def mail(body: str) -> bytes:
        return make_mail("ana@example.org", subject, body)
    if choice < 0.3:
        return [(later(1, 480), mail("#done Fixed it."))]
    if choice < 0.55:
        return [(later(1, 240), mail("#take\nI am looking into it.")), (later(250, 500), mail("Nearly there."))]
    if choice < 0.65:
        return [(later(1, 100), mail("#eta +12d the part is on back order"))]
    if choice < 0.75:
        return [(later(1, 20), mail("#ontrack"))]
    return []  # the silent owner: only inboxd keeps the requester informed


def test_no_open_request_is_silent_longer_than_update_every_over_a_month(tmp_path):
    config = load_config(write_config(tmp_path, extra="\n[service]\ndigest = false\nannounce_new = false\n"))
    clock = FixedClock(START)
    daemon = Daemon(config, clock=clock, source=FakeSource(), transport=FakeTransport())
    rng = random.Random(2026)
    arrivals = sorted(START + timedelta(minutes=rng.randrange(7 * 24 * 60)) for _ in range(REQUESTS))
    timeline = [(when, make_mail(f"user{n}@example.org", f"Question {n} about my setup", "Please help."))
                for n, when in enumerate(arrivals, 1)]
    timeline += [step for n, when in enumerate(arrivals, 1) for step in owner_mails(rng, n, when)]
    timeline.sort(key=lambda step: step[0])

    pending = iter(timeline)
    upcoming = next(pending, None)
    while clock.now() < END:
        hour_end = clock.now() + SWEEP
        while upcoming is not None and upcoming[0] < hour_end:
            clock.moment = upcoming[0]
            assert daemon.pipeline.process(upcoming[1]).kind != "parked"
            upcoming = next(pending, None)
        clock.moment = hour_end
        daemon.sweep()

    assert Item.select().count() == REQUESTS
    told: dict[int, list[datetime]] = defaultdict(list)
    for item_id, recipient, created in Outbox.select(Outbox.item, Outbox.recipient, Outbox.created_at).tuples():
        told[item_id].append((recipient, created))
    calendar, every = config.calendar, config.service.update_every
    checked = 0
    for item in Item.select():
        moments = sorted([item.created_at] + [t for to, t in told[item.id] if to == item.requester])
        end = item.resolved_at if item.status == "done" else END
        for heard, next_heard in zip(moments, [*moments[1:], end], strict=True):
            if heard >= end:
                break
            # Silent at most update_every (business time), plus the hour between two sweeps.
            assert next_heard <= calendar.add(heard, every) + SWEEP, (item.id, heard, next_heard)
            checked += 1
    updates = Notice.select().where(Notice.kind == "status_update").count()
    assert updates > REQUESTS and checked > 2 * REQUESTS
    assert Outbox.select().where(Outbox.kind == "status_update").count() == updates  # each sent exactly once
