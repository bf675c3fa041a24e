"""The PostgreSQL store's schema and its versions (the table ``schema_version``), applied when a store opens or by
``gateway migrate`` - as sqlite_schema.py does for SQLite: one migration at a time, each in one transaction
with its version, under an advisory lock so that gateway processes starting together migrate once; a
database of a newer version than this gateway knows is refused.
"""

from __future__ import annotations

from importlib import resources

from gateway.store.migrations import Migration, refuse_newer
from gateway.store.postgres_rows import Connection

__all__ = ["LATEST", "MIGRATIONS", "migrate"]

#: the advisory lock the migration holds (any number no other part of the database uses)
_LOCK = 7_200_101_012


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the base schema"),
    Migration(
        2,
        "job turns: a housekeeping job runs once a period across the processes of a store",
        (
            """CREATE TABLE IF NOT EXISTS job_turns (
                   job      text PRIMARY KEY,
                   turn     bigint NOT NULL,
                   taken_by text NOT NULL,
                   taken_at double precision NOT NULL
               )""",
        ),
    ),
)
LATEST = MIGRATIONS[-1].version


async def migrate(conn: Connection) -> tuple[int, int]:
    """Bring the database to :data:`LATEST`; (the version found, the version now)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        found = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
        refuse_newer(found, LATEST)
        for migration in MIGRATIONS:
            if migration.version <= found:
                continue
            if migration.statements:
                for statement in migration.statements:
                    await conn.execute(statement)
            else:
                base = resources.files("gateway.store").joinpath("postgres_schema.sql").read_text(encoding="utf-8")
                await conn.execute(base)
            await conn.execute("DELETE FROM schema_version")
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", migration.version)
        now = await conn.fetchval("SELECT max(version) FROM schema_version")
    return int(found), int(now)
