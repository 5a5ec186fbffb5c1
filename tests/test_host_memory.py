"""retain_freed_memory: freed host memory is reused instead of page-faulted in again."""

import subprocess
import sys
import textwrap

import pytest

PAGE = 4096
SIZE = 256 * 2**20

# Mallocs, touches and frees SIZE bytes twice in a fresh process, as XLA CPU does with its
# temporaries, and prints the page faults of the second round (glibc's default: one a page).
_SCRIPT = textwrap.dedent(
    f"""
    import ctypes, ctypes.util, resource
    from mopeft_jax.host_memory import retain_freed_memory

    applied = retain_freed_memory(single_arena={{single_arena}})

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def faults_of_one_round():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc({SIZE})
        ctypes.memset(block, 1, {SIZE})
        libc.free(block)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_one_round()
    print(applied, faults_of_one_round())
    """
)


@pytest.mark.parametrize("single_arena", [True, False])
def test_second_allocation_reuses_the_freed_pages(single_arena):
    """In the main thread, with or without the one-arena limit (which binds other threads)."""
    script = _SCRIPT.replace("{single_arena}", str(single_arena))
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout.split()
    applied, faults = out[0] == "True", int(out[1])
    if not applied:
        pytest.skip("not glibc: retain_freed_memory changes nothing here")
    assert faults < 0.01 * SIZE / PAGE
