"""Run a command with file permissions enforced, even as root: ``python unprivileged.py CMD...``.

Root ignores file modes (``CAP_DAC_OVERRIDE``), so ``chmod 444`` cannot make
a database read-only for it. This drops that capability (and the other two
that bypass file modes) from the bounding set, then executes the command:
a root process started that way keeps uid 0 and its files, but opens a
read-only file read-only. Needs ``CAP_SETPCAP`` (root normally has it);
exits with status 3 when it cannot drop them.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            print(f"cannot drop capability {capability}: {os.strerror(ctypes.get_errno())}")
            sys.exit(3)
    os.execv(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
