"""The claim statement is index-driven: its cost does not grow with finished runs."""

from __future__ import annotations

from durably import Durably
from durably.leases import _CLAIM


def test_every_table_access_of_the_claim_uses_an_index(durably: Durably) -> None:
    compiled = _CLAIM.compile(dialect=durably.engine.dialect)
    params = compiled.construct_params(
        {"claim_now": 1, "claim_owner": "worker", "claim_expires": 2}
    )
    assert compiled.positiontup is not None
    with durably.engine.connect() as conn:
        plan = [
            row[3]
            for row in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled}",
                tuple(params[name] for name in compiled.positiontup),
            )
        ]
    accesses = [
        line for line in plan if line.startswith(("SCAN", "SEARCH")) and " anon_" not in line
    ]
    assert len(accesses) == 5  # the run itself, both arms, both concurrency-key checks
    assert all(line.startswith("SEARCH") and "USING INDEX" in line for line in accesses), plan
