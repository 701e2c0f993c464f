"""The index beside each Maildir folder: UIDs, flags and modification sequences.

One SQLite database per folder (``correo-index.sqlite`` in the folder's
directory, WAL mode with ``synchronous=NORMAL``: every commit survives a
crash of the process; after a power loss the last flag changes or expunges
may be undone, never a message — new messages are fsynced, file and folder,
before their row is written, and a file without a row is adopted on open).  It holds the folder's UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, one
row per message (UID → file, size, internal date, flags incl. keywords,
MODSEQ), the keyword letters used in file names, and — in INBOX's index only —
the mailbox's subscription list and its UIDVALIDITY counter.

``deliveries`` remembers the idempotency key of every LMTP delivery stored
here (:mod:`correo_server.deliverykeys`), committed with the message's row,
so that a delivery repeated after a crash is recognised; keys older than a
week are dropped.

Two tables serve the protocol extensions: ``vanished`` remembers the UID and
MODSEQ of every expunge (QRESYNC's VANISHED, RFC 7162; ``vanished_from`` in
meta is the MODSEQ from which the record is complete, for indexes made before
it existed), and ``message_data`` keeps small values derived from a message
(by kind: the IMAP summary SORT and THREAD use), which go with the message.

This module is synchronous and knows nothing about Maildir names or IMAP;
:mod:`.store` drives it from worker threads, one thread at a time per folder
(the folder's lock), and keeps the cached view in memory.
"""
from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

INDEX_FILE = "correo-index.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS messages (
    uid INTEGER PRIMARY KEY,
    base TEXT NOT NULL UNIQUE,      -- the unchanging part of the file name
    path TEXT NOT NULL,             -- new/<base> or cur/<base>:2,<letters>
    size INTEGER NOT NULL,
    internaldate REAL NOT NULL,     -- seconds since the epoch
    tzoffset INTEGER NOT NULL,      -- minutes east of UTC of the internal date
    flags TEXT NOT NULL,            -- space-separated system flags and keywords
    modseq INTEGER NOT NULL,
    lf INTEGER NOT NULL DEFAULT 0   -- 1: stored with bare LF line ends (taken over from
                                    -- Dovecot and the like): served with CRLF
);
CREATE TABLE IF NOT EXISTS keywords (letter TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS subscriptions (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS vanished (uid INTEGER PRIMARY KEY, modseq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT PRIMARY KEY,           -- the delivery's idempotency key (LMTP XDELIVERY-KEY)
    uid INTEGER NOT NULL,           -- the message it stored
    time REAL NOT NULL              -- when (seconds since the epoch), for forgetting old keys
);
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries(time);
CREATE TABLE IF NOT EXISTS message_data (
    kind TEXT NOT NULL,             -- what it is (e.g. imap.summary)
    uid INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (kind, uid)
);
"""


class IndexCorrupt(Exception):
    """The database cannot be read; the store moves it aside and rebuilds."""


@dataclass
class Row:
    uid: int
    base: str
    path: str
    size: int
    internaldate: float
    tzoffset: int
    flags: frozenset[str]
    modseq: int
    lf: bool = False


def _flags_text(flags: frozenset[str] | set[str]) -> str:
    return " ".join(sorted(flags))


class Index:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA cache_size=-256")  # KiB; many folders are open at once
            self.db.executescript(_SCHEMA)
            self.db.execute("PRAGMA quick_check(1)").fetchone()
            if self.get_meta("vanished_from") is None:  # expunges are recorded from here on
                self.set_meta("vanished_from", int(self.get_meta("highestmodseq", 0)))
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self.db.close()
            raise IndexCorrupt(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK if the block raises."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta ---------------------------------------------------------------
    def get_meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def ext_meta(self) -> dict[str, str]:
        """The values extensions keep folder-wide (``ext.<name>`` keys)."""
        return {k[4:]: str(v) for k, v in self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'ext.%'")}

    def set_meta(self, key: str, value) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # -- messages -----------------------------------------------------------
    def rows(self) -> list[Row]:
        cur = self.db.execute(
            "SELECT uid, base, path, size, internaldate, tzoffset, flags, modseq, lf FROM messages ORDER BY uid")
        return [Row(uid, base, path, size, idate, tz, frozenset(flags.split()) if flags else frozenset(), modseq,
                    bool(lf))
                for uid, base, path, size, idate, tz, flags, modseq, lf in cur]

    def totals(self) -> tuple[int, int]:
        """(messages, bytes) without loading the rows."""
        count, total = self.db.execute("SELECT count(*), coalesce(sum(size), 0) FROM messages").fetchone()
        return int(count), int(total)

    def insert(self, row: Row) -> None:
        self.db.execute(
            "INSERT INTO messages(uid, base, path, size, internaldate, tzoffset, flags, modseq, lf) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.uid, row.base, row.path, row.size, row.internaldate, row.tzoffset,
             _flags_text(row.flags), row.modseq, int(row.lf)))

    def update(self, uid: int, *, flags: frozenset[str], modseq: int, path: str) -> None:
        self.db.execute("UPDATE messages SET flags = ?, modseq = ?, path = ? WHERE uid = ?",
                        (_flags_text(flags), modseq, path, uid))

    def set_path(self, uid: int, path: str) -> None:
        self.db.execute("UPDATE messages SET path = ? WHERE uid = ?", (path, uid))

    def delete(self, uids: list[int], modseq: int) -> None:
        """Remove messages expunged at ``modseq`` (remembered in ``vanished``)
        with the data derived from them."""
        self.db.executemany("DELETE FROM messages WHERE uid = ?", [(u,) for u in uids])
        self.db.executemany("DELETE FROM message_data WHERE uid = ?", [(u,) for u in uids])
        self.db.executemany("INSERT OR REPLACE INTO vanished(uid, modseq) VALUES (?, ?)",
                            [(u, modseq) for u in uids])

    # -- expunges (QRESYNC) ----------------------------------------------------
    def vanished(self, since: int) -> tuple[list[int], bool]:
        """UIDs expunged after MODSEQ ``since`` (ascending), and whether the
        record covers all of them (False: some expunges before the record
        began may be missing)."""
        uids = [u for (u,) in self.db.execute("SELECT uid FROM vanished WHERE modseq > ? ORDER BY uid", (since,))]
        return uids, since >= int(self.get_meta("vanished_from", 0))

    # -- data derived from messages --------------------------------------------
    def message_data(self, kind: str) -> dict[int, bytes]:
        return {uid: bytes(value) for uid, value in
                self.db.execute("SELECT uid, value FROM message_data WHERE kind = ?", (kind,))}

    def message_data_for(self, kind: str, uids: list[int]) -> dict[int, bytes]:
        """Values of one kind for these messages only (those that have one)."""
        out: dict[int, bytes] = {}
        for i in range(0, len(uids), 500):
            chunk = uids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out.update((uid, bytes(value)) for uid, value in self.db.execute(
                f"SELECT uid, value FROM message_data WHERE kind = ? AND uid IN ({marks})", [kind, *chunk]))
        return out

    def message_data_of(self, uids: list[int]) -> dict[int, dict[str, bytes]]:
        """Every kind of value kept for these messages: UID → kind → value
        (what a copy or a move carries along)."""
        out: dict[int, dict[str, bytes]] = {}
        for i in range(0, len(uids), 500):
            chunk = uids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for uid, kind, value in self.db.execute(
                    f"SELECT uid, kind, value FROM message_data WHERE uid IN ({marks})", chunk):
                out.setdefault(uid, {})[kind] = bytes(value)
        return out

    def put_message_data(self, kind: str, rows: dict[int, bytes]) -> None:
        """Only for messages still here (a value for an expunged one is dropped)."""
        self.db.executemany(
            "INSERT OR REPLACE INTO message_data(kind, uid, value) "
            "SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM messages WHERE uid = ?)",
            [(kind, uid, value, uid) for uid, value in rows.items()])

    # -- delivery keys (exactly-once delivery) ----------------------------------
    def delivered(self, keys: list[str]) -> dict[str, int]:
        """Those of ``keys`` already delivered here: key → UID."""
        out: dict[str, int] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out.update(self.db.execute(f"SELECT key, uid FROM deliveries WHERE key IN ({marks})", chunk))
        return out

    def record_deliveries(self, rows: list[tuple[str, int, float]]) -> None:
        """(key, UID, time) of deliveries just stored (inside the transaction
        that inserts their rows)."""
        self.db.executemany("INSERT OR IGNORE INTO deliveries(key, uid, time) VALUES (?, ?, ?)", rows)

    def forget_deliveries(self, before: float) -> int:
        """Drop the keys of deliveries older than ``before``; how many."""
        return self.db.execute("DELETE FROM deliveries WHERE time < ?", (before,)).rowcount

    # -- keywords (letters in file names) ------------------------------------
    def keywords(self) -> dict[str, str]:
        """keyword → letter."""
        return {name: letter for letter, name in self.db.execute("SELECT letter, name FROM keywords")}

    def add_keyword(self, letter: str, name: str) -> None:
        self.db.execute("INSERT INTO keywords(letter, name) VALUES (?, ?)", (letter, name))

    # -- subscriptions (INBOX's index) ----------------------------------------
    def subscriptions(self) -> list[str]:
        return [name for (name,) in self.db.execute("SELECT name FROM subscriptions ORDER BY name")]

    def subscribe(self, name: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO subscriptions(name) VALUES (?)", (name,))

    def unsubscribe(self, name: str) -> None:
        self.db.execute("DELETE FROM subscriptions WHERE name = ?", (name,))


def read_totals(path: Path) -> tuple[int, int] | None:
    """(messages, bytes) of a folder's index without opening it for writing;
    None when there is no readable index."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            count, total = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM messages").fetchone()
            return int(count), int(total)
        finally:
            db.close()
    except sqlite3.Error:
        return None
