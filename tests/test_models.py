"""Schema migrations: a database created by an older version is brought up to date in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from inboxd.models import Item, Message, open_database


def test_v1_database_gains_the_later_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((Path(__file__).parent / "data" / "schema_v1.sql").read_text())
    database = open_database(f"sqlite:///{path}")
    try:
        item = Item.get_by_id(1)
        assert item.subject == "Old request" and len(item.secret) == 32  # migration 5: 128-bit item secrets
        assert item.waiting_on is None and item.on_track is False and item.follows is None
        assert Message.get(Message.message_id == "<old@example.org>").body == ""
        assert "message_message_id" in {i.name for i in database.get_indexes("message")}
        assert {"recipient", "automatic"} <= {c.name for c in database.get_columns("outbox")}
        assert "outbox_recipient_created_at" in {i.name for i in database.get_indexes("outbox")}
        open_database(f"sqlite:///{path}")  # a second start applies nothing twice
    finally:
        database.close()


def test_v4_starts_the_jobs_without_a_burst_for_old_items(tmp_path: Path) -> None:
    v4_upgrade_scenario(f"sqlite:///{tmp_path / 'v3.db'}")


def v4_upgrade_scenario(url: str) -> None:
    """Items and mail of a schema-3 database: migration 4 reads what requesters heard, and skips old escalations."""
    from datetime import datetime, timedelta, timezone

    from inboxd.models import Notice, Outbox, SchemaVersion
    database = open_database(url)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    try:
        def item(subject: str, due: datetime, status: str = "open") -> Item:
            return Item.create(subject=subject, requester="rosa@example.org", queue="default", status=status,
                               created_at=now - timedelta(days=30), due_at=due, secret="s")
        late, later, done = item("Late", now - timedelta(days=2)), item("Later", now + timedelta(days=2)), \
            item("Done", now - timedelta(days=9), "done")
        Outbox.create(item=late, kind="relay", recipients=["rosa@example.org"], recipient="rosa@example.org",
                      sender="help@example.org", subject="s", message_id="<m1@x>", raw=b"",
                      created_at=now - timedelta(days=1), next_attempt_at=now)
        # Back to schema 3: no jobs yet, nothing known of what the requesters heard.
        Item.update(last_told_at=None).execute()
        database.drop_tables([Notice])
        SchemaVersion.delete().where(SchemaVersion.version == 4).execute()
        open_database(url)
        assert Item.get_by_id(late.id).last_told_at == now - timedelta(days=1)  # the relay
        assert Item.get_by_id(later.id).last_told_at == now - timedelta(days=30)  # nothing sent: its start
        assert sorted(n.kind for n in Notice.select().where(Notice.item == late)) == [
            "deadline_notice", "escalation", "owner_reminder"]
        assert Notice.select().where(Notice.item.in_([later, done])).count() == 0
    finally:
        database.close()


def test_v11_gives_old_items_the_team_language(tmp_path: Path) -> None:
    v11_upgrade_scenario(f"sqlite:///{tmp_path / 'v10.db'}")


def v11_upgrade_scenario(url: str) -> None:
    """An item of a schema-10 database: migration 11 adds its language, empty: the team's default set."""
    from datetime import datetime, timezone

    from inboxd.models import SchemaVersion
    from inboxd.queries import view
    database = open_database(url)
    try:
        item = Item.create(subject="Old", requester="rosa@example.org", queue="default",
                           created_at=datetime.now(timezone.utc), secret="s")
        database.execute_sql('ALTER TABLE "item" DROP COLUMN "language"')  # back to schema 10
        SchemaVersion.delete().where(SchemaVersion.version == 11).execute()
        assert "language" not in {c.name for c in database.get_columns("item")}
        open_database(url)
        assert "language" in {c.name for c in database.get_columns("item")}
        assert view(Item.get_by_id(item.id)).language == ""
        assert Item.create(subject="New", requester="ken@example.org", queue="default", created_at=item.created_at,
                           secret="s", language="de").language == "de"
    finally:
        database.close()
