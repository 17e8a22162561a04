"""Sortable identifiers (ULIDs) for runs.

A ULID is 48 bits of milliseconds followed by 80 random bits, written in
Crockford base32 (26 characters). Within one millisecond this generator
increments the random part instead of drawing a new one, so ids made by one
process sort in creation order; that is what makes FIFO claiming stable.

Random bits come from ``os.urandom`` 4 KiB at a time, not 10 bytes per id:
each ``os.urandom`` call releases and at once retakes the GIL, and a thread
doing that hundreds of times in a row (a batch trigger) starves the other
threads of the process, an event loop included, of the GIL for as long as
the loop lasts (measured: 100-1000 ms of event-loop lag). The buffer is
dropped in a forked child, which must not reuse its parent's random bits.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]
"""Every 10-bit value as its two characters: an id is 13 lookups, not 26."""
_PAIR_SHIFTS = range(120, -1, -10)
"""Where each pair of characters sits in the 130 bits of an id (the top two are zero)."""
_RANDOM_MAX = (1 << 80) - 1
_RANDOM_BYTES = 10
_POOL_SIZE = 4096


class _UlidGenerator:
    def __init__(self) -> None:
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._pool, self._offset = b"", 0
        self._last_ms, self._last_random = -1, 0
        self._prefix_bits, self._prefix = -1, ""

    def _random80(self) -> int:
        if self._offset + _RANDOM_BYTES > len(self._pool):
            self._pool, self._offset = os.urandom(_POOL_SIZE), 0
        start, self._offset = self._offset, self._offset + _RANDOM_BYTES
        return int.from_bytes(self._pool[start : self._offset], "big") >> 1

    def new(self) -> str:
        with self._lock:
            return self._text(self._next_value())

    def new_many(self, count: int) -> list[str]:
        """``count`` ids in one turn of the lock, as a batch trigger takes them."""
        with self._lock:
            return [self._text(self._next_value()) for _ in range(count)]

    def _next_value(self) -> int:
        """The next id as a number: now's milliseconds, then the random part. Under the lock."""
        ms = time.time_ns() // 1_000_000
        if ms <= self._last_ms:
            ms = self._last_ms
            self._last_random += 1
            if self._last_random > _RANDOM_MAX:  # 2^80 ids in one ms: move on
                ms += 1
                self._last_random = self._random80()
        else:
            self._last_random = self._random80()
        self._last_ms = ms
        return (ms << 80) | self._last_random

    def _text(self, value: int) -> str:
        """``value`` in base32. Under the lock.

        Consecutive ids of one millisecond differ in their random part by
        one, so mostly in their last two characters only: the other 24 are
        kept from the previous id and encoded again once per 1,024 ids or
        new millisecond.
        """
        if value >> 10 != self._prefix_bits:
            self._prefix_bits, self._prefix = value >> 10, _encode(value)[:-2]
        return self._prefix + _PAIRS[value & 1023]


def _encode(value: int) -> str:
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


_generator = _UlidGenerator()


def new_id() -> str:
    """A new monotonic ULID, e.g. ``01JD3M7Q4ZK2W9X8Y7V6T5S4R3``."""
    return _generator.new()


def new_ids(count: int) -> list[str]:
    """``count`` new monotonic ULIDs, in order: what ``count`` calls of :func:`new_id` give."""
    return _generator.new_many(count)
