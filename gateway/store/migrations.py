"""What both stores' schema versions share (sqlite_schema.py, postgres_schema.py): a migration, and the refusal
of a store whose schema is newer than this gateway knows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import StoreError

__all__ = ["Migration", "refuse_newer"]


@dataclass(frozen=True)
class Migration:
    """One schema version: why it exists, and the statements that bring the version before it here (none: the
    store's base schema file, every statement of it idempotent)."""

    version: int
    why: str
    statements: Sequence[str] = ()


def refuse_newer(found: int, latest: int) -> None:
    """An older gateway must not write into a schema it does not understand (after a rollback, say)."""
    if found > latest:
        raise StoreError(
            f"The store's schema is version {found}, written by a newer gateway; this one knows versions up to "
            f"{latest}. Run the newer gateway (or restore a backup of the store from before it ran)."
        )
