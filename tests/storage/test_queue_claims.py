"""The claim times of rate-limited queues (``durably_queue_claims``): written by the claim, in
its transaction, and pruned once no claim can count them."""

from __future__ import annotations

from durably import Durably, StepContext, testing
from durably.core.flow_control import RECORD_MARGIN_MS


def _claim_times(durably: Durably) -> list[tuple[str, int]]:
    return testing.database(durably).read(
        lambda conn: [
            tuple(row)
            for row in conn.exec_driver_sql(
                "SELECT queue, claimed_at FROM durably_queue_claims ORDER BY id"
            )
        ]
    )


def _jobs(durably: Durably) -> None:
    @durably.job("metered", queue="metered")
    def metered(step: StepContext, input: int) -> int:
        return input

    @durably.job("plain")
    def plain(step: StepContext, input: int) -> int:
        return input


def test_only_claims_of_rate_limited_queues_are_recorded_at_their_time(durably: Durably) -> None:
    durably.queue("metered", rate_limit=(10, 1.0))
    durably.queue("capped", concurrency=3)
    _jobs(durably)
    metered, plain = durably.get_job("metered"), durably.get_job("plain")
    assert metered is not None
    assert plain is not None
    metered.batch_trigger([1, 2])
    plain.trigger(3)
    plain.trigger(4, queue="capped")

    with testing.fake_clock(durably) as clock:
        assert durably.process_until_idle() == 4
    assert _claim_times(durably) == [("metered", clock.now), ("metered", clock.now)]


def test_claim_times_no_claim_can_count_are_pruned(durably: Durably) -> None:
    durably.queue("metered", rate_limit=(10, 2.0))
    _jobs(durably)
    metered = durably.get_job("metered")
    assert metered is not None
    metered.trigger(1)  # before the clock stops: due by its time
    with testing.fake_clock(durably) as clock:
        assert durably.process_one() is True
        first = clock.now
        clock.advance(2 + RECORD_MARGIN_MS / 1000 + 1)
        metered.trigger(2)
        assert durably.process_one() is True  # a claim prunes its own queue's old times
        assert _claim_times(durably) == [("metered", clock.now)]
        assert first < clock.now

        clock.advance(2 + RECORD_MARGIN_MS / 1000 + 1)
        testing.run_maintenance(durably)  # so does the idle maintenance, for every queue
        assert _claim_times(durably) == []
