"""The SQLite settings durably gives every connection of a local file (docs/deployment.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from durably import Durably, ValidationError

LOCAL = {"sqlite": "sqlite:///{path}", "libsql": "sqlite+libsql:///{path}"}
CHECKPOINT_MARK = {"sqlite": 4000, "libsql": 1000}
"""libSQL's driver holds the GIL while it checkpoints, so its log stays at SQLite's default."""


def _pragmas(durably: Durably) -> dict[str, object]:
    with durably.engine.connect() as conn:
        values = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "wal_autocheckpoint")
        }
        conn.rollback()
    return values


@pytest.mark.parametrize("driver", sorted(LOCAL))
@pytest.mark.parametrize(("synchronous", "level"), [("NORMAL", 1), ("full", 2), ("EXTRA", 3)])
def test_a_local_file_gets_wal_the_chosen_durability_and_its_driver_s_checkpoint_mark(
    tmp_path: Path, driver: str, synchronous: str, level: int
) -> None:
    durably = Durably(LOCAL[driver].format(path=tmp_path / "d.db"), synchronous=synchronous)
    try:
        durably.migrate()
        assert _pragmas(durably) == {
            "journal_mode": "wal",
            "synchronous": level,
            "wal_autocheckpoint": CHECKPOINT_MARK[driver],
        }
    finally:
        durably.close()


def test_an_unknown_durability_level_is_refused_before_anything_is_opened(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="synchronous"):
        Durably(f"sqlite:///{tmp_path / 'd.db'}", synchronous="SOMETIMES")
    assert not (tmp_path / "d.db").exists()
