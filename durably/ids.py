"""Sortable identifiers (ULIDs) for runs.

A ULID is 48 bits of milliseconds followed by 80 random bits, written in
Crockford base32 (26 characters). Within one millisecond this generator
increments the random part instead of drawing a new one, so ids made by one
process sort in creation order; that is what makes FIFO claiming stable.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_MAX = (1 << 80) - 1


class _UlidGenerator:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def new(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                self._last_random += 1
                if self._last_random > _RANDOM_MAX:  # 2^80 ids in one ms: move on
                    ms += 1
                    self._last_random = int.from_bytes(os.urandom(10), "big") >> 1
            else:
                self._last_random = int.from_bytes(os.urandom(10), "big") >> 1
            self._last_ms = ms
            value = (ms << 80) | self._last_random
        chars = []
        for _ in range(26):
            chars.append(_ALPHABET[value & 31])
            value >>= 5
        return "".join(reversed(chars))


_generator = _UlidGenerator()


def new_id() -> str:
    """A new monotonic ULID, e.g. ``01JD3M7Q4ZK2W9X8Y7V6T5S4R3``."""
    return _generator.new()
