"""A child process that dies with the process that started it (Linux PR_SET_PDEATHSIG)."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with(env_name: str) -> None:
    """SIGTERM when the process whose pid is in env ``env_name`` dies; exit 3 if it already has.

    Nothing happens when the variable is unset (a process started by hand)."""
    owner = os.environ.get(env_name)
    if not owner:
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    if os.getppid() != int(owner):  # the owner died before prctl took effect
        os._exit(3)
