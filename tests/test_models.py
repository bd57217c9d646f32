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
        assert item.subject == "Old request" and len(item.secret) == 8
        assert item.waiting_on is None and item.on_track is False and item.follows is None
        assert Message.get(Message.message_id == "<old@example.org>").body == ""
        assert "message_message_id" in {i.name for i in database.get_indexes("message")}
        assert {"recipient", "automatic"} <= {c.name for c in database.get_columns("outbox")}
        assert "outbox_recipient_created_at" in {i.name for i in database.get_indexes("outbox")}
        open_database(f"sqlite:///{path}")  # a second start applies nothing twice
    finally:
        database.close()
