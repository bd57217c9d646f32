"""Three `inboxd run` workers over one PostgreSQL database and four teams' Dovecot mailboxes (issue 17).

Each worker runs from a folder of its own (its config.toml, teams.d and [http] listen: as on a machine of its
own) with the same database and mailboxes. Every mail becomes one item and gets one acknowledgement; kill -9
of the worker holding most mailboxes: the others pick them up (waited for with a deadline, not timed), no mail
lost, no item twice, at most one acknowledgement twice.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import http_get, make_mail, start_run, wait_for
from test_workers import teams_config

from inboxd.cli import cli
from inboxd.models import Item, db, open_database
from inboxd.servers import append_messages
from inboxd.servers.base import free_port
from inboxd.servers.imap import DovecotServer

TEAMS = 4
PER_TEAM = 4  # mails to each team before the kill, and as many after


@pytest.fixture(scope="module")
def boxes() -> Iterator[list[DovecotServer]]:
    """A Dovecot of its own for each team's user t1…t4 (one user per instance, as DovecotServer makes them)."""
    servers = [DovecotServer(user=f"t{n}") for n in range(1, TEAMS + 1)]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


class Worker:
    """`inboxd run` from a folder of its own, as a process group of its own (its delivery processes with it)."""

    def __init__(self, folder: Path, deployment: Path) -> None:
        shutil.copytree(deployment.parent, folder)
        self.port, self.log = free_port(), folder / "run.log"
        config = folder / deployment.name
        config.write_text(config.read_text() + f'\n[http]\nlisten = "127.0.0.1:{self.port}"\n')
        self.process = start_run(config, folder, self.log)

    def healthz(self) -> tuple[int, str]:
        return http_get(self.port, "/healthz")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)



@pytest.fixture
def deployment(tmp_path, boxes, postgres, smtp_capture) -> Iterator[Path]:
    """Four teams T1…T4, each on its Dovecot, sharing one PostgreSQL database and one SMTP capture."""
    for box in boxes:
        box.reset()
    path = teams_config(tmp_path / "deployment", TEAMS, postgres.create_database("inboxd_workers"), smtp_capture.port)
    for n, box in enumerate(boxes, 1):
        team = path.parent / "teams.d" / f"t{n}.toml"
        team.write_text(team.read_text() + f"port = {box.port}\n")
    yield path
    db.close()  # the test's own look at the database: the next test makes it afresh


@pytest.fixture
def workers(tmp_path, deployment) -> Iterator[list[Worker]]:
    """Three workers, started at once on a database migrated first (docs/cli.md: `inboxd migrate --team` any, then the workers)."""
    result = CliRunner().invoke(cli, ["--config", str(deployment), "migrate", "--team", "T1"])
    assert result.exit_code == 0, result.output
    started = [Worker(tmp_path / f"worker{n}", deployment) for n in range(3)]
    yield started
    for worker in started:  # also when an assertion failed: no worker outlives the test
        worker.kill()


def who_holds(deployment: Path) -> dict:
    result = CliRunner().invoke(cli, ["--config", str(deployment), "workers", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def requests(boxes: list[DovecotServer], round_: int) -> dict[str, str]:
    """PER_TEAM mails to each team's mailbox; subject -> the team it was sent to."""
    sent = {}
    for n, box in enumerate(boxes, 1):
        subjects = [f"Request {round_}-{n}-{i}" for i in range(PER_TEAM)]
        append_messages(box, [make_mail(f"r{round_}{n}{i}@example.org", s, to=f"t{n}@example.org")
                              for i, s in enumerate(subjects)])
        sent |= dict.fromkeys(subjects, f"T{n}")
    return sent


def acknowledgements(smtp_capture) -> Counter:
    """How many acknowledgements each request's subject got."""
    mails = [email.message_from_bytes(m.data, policy=email.policy.default) for m in smtp_capture.messages]
    return Counter(str(m["Subject"]).split("We have your request: ", 1)[1] for m in mails
                   if "We have your request: " in str(m["Subject"]))


def test_three_workers_share_four_mailboxes_and_take_over_from_a_killed_one(deployment, boxes, workers,
                                                                            smtp_capture):
    teams = {f"T{n}" for n in range(1, TEAMS + 1)}

    def shared() -> dict[str, list[str]] | None:
        """Who holds what, once three workers hold every mailbox, none more than its share (ceil(4 / 3) = 2)."""
        found = who_holds(deployment)
        held = {w["name"]: w["teams"] for w in found["workers"]}
        fair = len(held) == 3 and not found["unwatched"] and max(len(ts) for ts in held.values()) == 2
        return held if fair else None
    wait_for(shared, "three workers sharing every mailbox fairly")  # the first to start takes all, then gives back
    held = shared() or {}
    assert sorted(t for ts in held.values() for t in ts) == sorted(teams)  # each mailbox held by one worker

    sent = requests(boxes, 1)
    open_database(_url(deployment), migrate=False)
    wait_for(lambda: sum(acknowledgements(smtp_capture).values()) >= len(sent), "every acknowledgement")
    assert {i.subject: i.team for i in Item.select()} == sent  # every mail once, an item of its own team
    assert acknowledgements(smtp_capture) == Counter(dict.fromkeys(sent, 1))

    # kill -9 of the worker holding most mailboxes, with mail arriving for every team
    most = max(held, key=lambda name: len(held[name]))
    victim = next(w for w in workers if w.process.pid == int(most.split(":")[-2]))
    lost = held[most]
    victim.kill()
    sent |= requests(boxes, 2)
    survivors = [w for w in workers if w is not victim]
    wait_for(lambda: not who_holds(deployment)["unwatched"] and most not in
             {w["name"] for w in who_holds(deployment)["workers"]}, "the killed worker's mailboxes picked up")
    wait_for(lambda: Item.select().count() >= len(sent) and set(acknowledgements(smtp_capture)) == set(sent),
             "every mail after the kill acknowledged")
    items = list(Item.select())
    assert Counter(i.subject for i in items) == Counter(dict.fromkeys(sent, 1))  # 0 lost, 0 duplicate items
    assert {i.subject: i.team for i in items} == sent
    acks = acknowledgements(smtp_capture)
    assert set(acks) == set(sent) and sum(acks.values()) - len(sent) <= 1  # at most one twice, for the one kill
    now_held = {t for w in who_holds(deployment)["workers"] for t in w["teams"]}
    assert now_held == teams and set(lost) <= now_held

    # /healthz of each survivor names the teams it holds; SIGTERM ends them cleanly
    holding = {w["name"]: w["teams"] for w in who_holds(deployment)["workers"]}
    for worker in survivors:
        name = next(n for n in holding if int(n.split(":")[-2]) == worker.process.pid)
        status, text = worker.healthz()
        assert status == 200 and sorted(line.split(":")[0] for line in text.splitlines()[1:]) == sorted(holding[name]), text
    for worker in survivors:
        os.killpg(worker.process.pid, signal.SIGTERM)
    assert [worker.process.wait(60) for worker in survivors] == [0, 0]
    assert who_holds(deployment) == {"workers": [], "unwatched": sorted(teams)}  # the leases were given back


def _url(deployment: Path) -> str:
    from inboxd.config import load_teams
    return load_teams(deployment, secrets=False)[0].database_url


def test_a_frozen_worker_is_replaced_and_its_sessions_ended_and_it_takes_part_again_when_it_thaws(
        deployment, boxes, workers, smtp_capture):
    """SIGSTOP of a worker and its delivery (a machine frozen, or cut off): its database sessions and their locks stay
    open on the server, so the worker taking its mailboxes over ends them (RowLeases.fence); thawed, it has lost its
    leases, and takes its share again without writing a mail twice."""
    wait_for(lambda: len(who_holds(deployment)["workers"]) == 3 and not who_holds(deployment)["unwatched"],
             "three workers sharing every mailbox")
    held = {w["name"]: w["teams"] for w in who_holds(deployment)["workers"]}
    frozen_name = max(held, key=lambda name: len(held[name]))
    frozen = next(w for w in workers if w.process.pid == int(frozen_name.split(":")[-2]))
    os.killpg(frozen.process.pid, signal.SIGSTOP)
    try:
        sent = requests(boxes, 1)
        wait_for(lambda: not who_holds(deployment)["unwatched"] and frozen_name not in
                 {w["name"] for w in who_holds(deployment)["workers"]}, "the frozen worker's mailboxes picked up")
        open_database(_url(deployment), migrate=False)
        wait_for(lambda: set(acknowledgements(smtp_capture)) == set(sent), "every mail acknowledged while it is frozen")
    finally:
        os.killpg(frozen.process.pid, signal.SIGCONT)
    assert any("database session(s) of worker(s) no longer alive" in w.log.read_text()
               for w in workers if w is not frozen)  # the takeover ended its sessions, and said so
    wait_for(lambda: frozen_name in {w["name"] for w in who_holds(deployment)["workers"] if w["teams"]},
             "the thawed worker taking its share again")
    sent |= requests(boxes, 2)
    wait_for(lambda: set(acknowledgements(smtp_capture)) == set(sent), "every mail after the thaw acknowledged")
    items = list(Item.select())
    assert Counter(i.subject for i in items) == Counter(dict.fromkeys(sent, 1))  # 0 lost, 0 duplicate items
    assert {i.subject: i.team for i in items} == sent
    acks = acknowledgements(smtp_capture)
    assert sum(acks.values()) - len(sent) <= 1  # at most one twice: a mail it was sending as it froze
    assert frozen.process.poll() is None  # it took part again rather than stopping
