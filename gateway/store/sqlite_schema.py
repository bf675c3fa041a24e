"""The SQLite store's schema and its versions, kept in the file itself (``PRAGMA user_version``).

A database is brought to :data:`LATEST` when a store opens it (or by ``gateway migrate``), one migration at a
time, each with its version written when it is done - so a run cut off half-way goes on from where it stopped.
Version 1 is the base schema (schema.sql, every statement ``IF NOT EXISTS``): a database written before
versions were kept (0, the first wave's and later) gains the tables and indexes it lacks and loses nothing. A
later migration appends here a version and the statements that change an existing database (``ALTER TABLE``
...), run in one transaction.

A database of a *newer* version than this gateway knows is refused: an older gateway must not write into a
schema it does not understand (after a rollback, say) - StoreError, naming both versions.
"""

from __future__ import annotations

import sqlite3
from importlib import resources

from gateway.store.migrations import Migration, refuse_newer

__all__ = ["LATEST", "MIGRATIONS", "migrate", "version_of"]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the base schema; an unversioned database gains what it lacks (the refusals table, say)"),
    Migration(
        2,
        "job turns: a housekeeping job runs once a period across the processes of a store",
        (
            """CREATE TABLE IF NOT EXISTS job_turns (
                   job      TEXT PRIMARY KEY,
                   turn     INTEGER NOT NULL,   -- the period last taken: floor(time / the job's interval)
                   taken_by TEXT NOT NULL,
                   taken_at REAL NOT NULL
               )""",
        ),
    ),
)
LATEST = MIGRATIONS[-1].version


def version_of(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection) -> tuple[int, int]:
    """Bring ``db`` (in autocommit mode) to :data:`LATEST`; (the version found, the version now)."""
    found = version_of(db)
    refuse_newer(found, LATEST)
    for migration in MIGRATIONS:
        if migration.version <= found:
            continue
        if not migration.statements:
            db.executescript(resources.files("gateway.store").joinpath("schema.sql").read_text(encoding="utf-8"))
            db.execute(f"PRAGMA user_version = {int(migration.version)}")
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in migration.statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {int(migration.version)}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return found, version_of(db)
