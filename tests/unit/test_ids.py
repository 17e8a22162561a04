"""Run ids: sortable, unique, and never shared by a forked child and its parent."""

from __future__ import annotations

import os
import time

import pytest

from durably import ids
from durably.ids import new_id


def test_ids_sort_in_creation_order_and_are_unique() -> None:
    ids = [new_id() for _ in range(5000)]  # many within one millisecond, across pool refills
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)


def test_a_forked_child_does_not_reuse_the_parents_random_bits() -> None:
    new_id()  # the parent now has buffered random bytes a child could inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave at once
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent_id = new_id()
    assert len(child_id) == 26
    assert child_id[10:] != parent_id[10:]  # the 80 random bits differ


def test_ids_are_ulids_that_carry_their_creation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The ULID specification's example: 1469918176385 ms is "01ARYZ6S41".
    monkeypatch.setattr(ids, "_generator", ids._UlidGenerator())
    monkeypatch.setattr(time, "time_ns", lambda: 1_469_918_176_385_000_000)
    first, second = new_id(), new_id()

    assert first[:10] == second[:10] == "01ARYZ6S41"
    crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    as_int = [
        sum(crockford.index(c) << 5 * i for i, c in enumerate(reversed(x))) for x in (first, second)
    ]
    assert as_int[1] == as_int[0] + 1  # one millisecond: the random part counts up
    assert as_int[0] >> 80 == 1_469_918_176_385


def test_ids_that_share_their_leading_characters_are_spelled_in_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Consecutive ids reuse the characters they share with the previous one,
    # re-encoded once per 1,024 ids; across each such boundary (and a carry
    # into every higher character) each id must still be its value spelled
    # out in full, one at a time or in a batch.
    ms = 1_469_918_176_385
    first_random = (1 << 70) - 3  # three ids on, 14 characters change at once
    monkeypatch.setattr(time, "time_ns", lambda: ms * 1_000_000)
    one_by_one, batched = ids._UlidGenerator(), ids._UlidGenerator()
    for generator in (one_by_one, batched):
        generator._last_ms, generator._last_random = ms, first_random

    expected = [ids._encode((ms << 80) | (first_random + i)) for i in range(1, 3001)]
    assert [one_by_one.new() for _ in range(3000)] == expected
    assert batched.new_many(3000) == expected
    assert expected[2][:12] != expected[1][:12]  # the carry happened
    assert len(set(expected)) == 3000
    assert expected == sorted(expected)
