"""How freed host memory goes back to the system.

glibc's malloc keeps the blocks a process frees for reuse, and raises its threshold for
serving large blocks from their own mappings each time one is freed. A loop that makes and
drops many tensors of a few MB (Kornia's intermediates over a training set) then keeps a
heap whose size depends on the order of its allocations: augment's peak moved by 240 MB
from one chunk of 256 images to the next (3960 demo crops), which made the bench's slope
per 1,000 crops mostly noise. Serving every block of 128 KiB or more from its own mapping
frees it at once: augment's resident memory stays at the split plus one chunk's working
memory (907 MB against 1163 at the peak), at about 1.7 times its seconds (page faults on
the fresh mappings). Training keeps glibc's default: there the same setting cost a third
of its images per second.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt's parameter number for the mmap threshold (malloc.h: M_MMAP_THRESHOLD = -3).
M_MMAP_THRESHOLD = -3
# glibc's own starting threshold, fixed there instead of raised as blocks are freed.
MMAP_THRESHOLD_BYTES = 128 * 1024


def release_freed_memory_at_once() -> bool:
    """Serve blocks of MMAP_THRESHOLD_BYTES or more from their own mappings for the rest of
    the process, so that freeing one returns it to the system. True where glibc took the
    setting; False elsewhere (macOS, musl), where nothing changes."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
