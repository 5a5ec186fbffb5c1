"""Keep freed host memory in the process, so XLA CPU does not page-fault it in again.

XLA's CPU runtime takes the temporaries of every execution from `malloc` and frees
them at its end. glibc serves blocks above its mmap threshold (at most 32 MB) with
fresh `mmap`s, hands them back on `free`, trims its heaps and deletes idle
thread-arena heaps, so every ViT-B train step touches its ~5 GB of temporaries as new
pages: about 1.3 million page faults a step, which the kernel zero-fills on the two
cores the step runs on (about 20% of its wall time; 0.5 s of a 3.5 s forward).
Keeping freed memory for reuse removes all of it.

The price is that the process keeps its peak host memory until it exits, which is
what a training or evaluation process wants anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt parameters of glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


@functools.lru_cache(maxsize=None)
def retain_freed_memory(single_arena: bool = True) -> bool:
    """Make glibc's malloc keep freed memory for reuse; call before the first JAX computation.

    Sets no `mmap` for large blocks, no trimming and, with `single_arena`, one malloc
    arena for all threads. The arena limit only binds threads that have not yet allocated,
    hence "before the first computation": the experiment scripts call it first thing.

    Args:
      single_arena: one arena for every thread. Without it, XLA's worker threads each get
        an arena whose blocks above 64 MB (glibc's heap size) are mapped and unmapped at
        every use: a ViT-B encoder gradient here took 1.1 million page faults and 12.6-23 s
        a step with two arenas, 24 thousand and 11.0-11.8 s with one. Its price is the one
        lock: the offline demo, thousands of small kernels a step in two threads, ran its
        comparison in 73-74 s with one arena and in 61-66 s without the limit
        (2026-12-02, 2-core AMD EPYC). Use it for models with large temporaries.

    Returns:
      True if the settings were applied; False, changing nothing, where the C library
      is not glibc (macOS, musl), whose allocators need no such help or offer none.
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    settings = [(_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)]  # -1: never
    if single_arena:
        settings.append((_M_ARENA_MAX, 1))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)
