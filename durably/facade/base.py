"""What every part of the ``Durably`` facade shares: the runtime, where reads go, the schema check."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import migrate as migrations
from ..core import runs as run_store
from ..engines.runtime import Runtime
from ..models import Run
from ..storage import AnyDatabase
from ..storage.replica import ReplicaReader

if TYPE_CHECKING:
    from ..jobs import Job


class FacadeBase:
    """State set up by :class:`durably.Durably`'s constructor."""

    _runtime: Runtime
    _reads: AnyDatabase | ReplicaReader
    """Where the read API reads: the database, or its embedded replica."""
    _schema_checked: bool
    _registry: dict[str, Job[Any, Any]]

    def _ensure_schema(self) -> None:
        if not self._schema_checked:
            migrations.check(self._runtime.db)
            self._schema_checked = True

    def _current_run(self, run_id: str) -> Run | None:
        """The run as the primary has it now, for decisions and waits (never the replica)."""
        row = self._runtime.db.read(run_store.get_run, run_id)
        return None if row is None else Run.from_row(row, serializer=self._runtime.serializer)
