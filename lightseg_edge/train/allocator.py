"""Keep the memory a training process frees, so the next step reuses it instead of page-faulting fresh pages in.

A training step allocates and frees full-resolution activations and gradients, many of them larger than glibc's
mmap threshold (at most 32 MiB). glibc serves each such block with a fresh ``mmap`` and unmaps it on free, and gives
the top of its heap back to the system once enough of it is free; the next operator that writes the memory then
faults it in again, 4 KiB at a time, and on a VM each fault is expensive. ``mallopt(M_MMAP_MAX, 0)`` serves large
blocks from the heap and ``mallopt(M_TRIM_THRESHOLD, -1)`` never shrinks it (both documented in mallopt(3)): the heap
grows to the run's peak once and is reused from then on (evaluation gains as much as training). The price is that
the process holds its peak memory until it exits, which is why the commands do this (``lightseg-train``,
``lightseg-eval``, ``python -m lightseg_edge.train.ship``: processes that do nothing else) and ``train()`` called from
a caller's Python does not. ``benchmarks/train_speed.py`` measures step time, page faults and peak memory with and
without it.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt(3) parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> str:
    """Set glibc's malloc to keep freed memory in this process (see the module docstring); a no-op elsewhere. Returns
    a one-line account for the run log."""
    if platform.libc_ver()[0] != "glibc":
        return "memory: the C library's default allocator (not glibc)"
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not (mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, -1)):
        return "memory: glibc's default allocator (mallopt refused)"
    return "memory: freed blocks stay in the process for reuse (glibc mallopt: M_MMAP_MAX 0, M_TRIM_THRESHOLD -1)"
