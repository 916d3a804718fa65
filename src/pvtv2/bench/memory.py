"""Resident-memory measurement on Linux CPUs: the peak of this process from a chosen moment on.

``getrusage``'s ``ru_maxrss`` cannot serve: Linux carries it over ``fork``/``exec``, so a
measuring child started by a large parent (a test runner, say) reports the parent's size.
``VmHWM`` belongs to the process's own address space and can be reset through
``/proc/self/clear_refs``.
"""
from __future__ import annotations

import ctypes
import resource


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Current resident memory in MiB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def start() -> float:
    """Return freed memory to the system and restart the peak from here; returns the current RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    return rss_mb()


def peak_since(base: float) -> float:
    """Peak resident memory (MiB) above ``base`` since :func:`start`."""
    hwm = _status_mb("VmHWM")
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return max(0.0, hwm - base)
