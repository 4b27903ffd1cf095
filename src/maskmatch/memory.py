"""Keeps a long batch of recognitions from holding on to freed memory (glibc's heap only; elsewhere a no-op).

glibc serves allocations below its mmap threshold from the heap, and raises the threshold (up to 32 MB on
64-bit) each time a large block is freed, so the activations of one batch end up in the heap, where freed
blocks of varied sizes fragment it and resident memory grows batch after batch. A fixed threshold sends
large tensors to mmap, returned to the system when freed. Measured over 200 CROHME 2014 images with
`maskmatch recognize --json` (beam 10): peak RSS 590 MB -> 475 MB at 4 MiB, median latency 31 -> 32 ms
(at 1 MiB: 407 MB but 42 ms; the mmap and page-fault cost of smaller thresholds shows).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 4 << 20  # bytes: blocks at least this large are mapped, and unmapped when freed


def limit_heap_growth() -> bool:
    """Fixes glibc's mmap threshold for this process; True if it did (Linux with glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
