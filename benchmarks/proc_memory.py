"""Peak resident memory of one phase of a benchmark process, from Linux's /proc/self.

Shared by the benchmarks that report memory (``core_speed.py``, ``peers.py``): reset the peak-RSS
mark (VmHWM) before a phase, read it after.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import sys


def status_kb(field: str) -> int | None:
    """A field of /proc/self/status in kB (VmRSS, VmHWM), or None where there is none."""
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (VmHWM) to its current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return status_kb("VmHWM") is not None


def lifetime_peak_mb() -> float:
    """This process's peak resident memory over its whole life (ru_maxrss), in MB."""
    import resource

    scale = 2**20 if sys.platform == "darwin" else 1024  # bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def release_freed_memory() -> None:
    """Collect garbage and return freed heap to the OS, so one phase does not inflate the next."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class MemoryCapExceeded(MemoryError):
    """An allocation inside :func:`address_space_cap` went over the cap."""


@contextlib.contextmanager
def address_space_cap(extra_gb: float):
    """Let this process's address space grow by at most ``extra_gb`` GB inside the block (Linux
    RLIMIT_AS, the soft limit put back afterwards), so that a method which would allocate more
    fails there with :class:`MemoryCapExceeded` instead of the whole run being OOM-killed.
    Where the limit cannot be set (not Linux), the block runs uncapped."""
    import resource

    size_kb = status_kb("VmSize")
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (AttributeError, ValueError, OSError):
        size_kb = None
    if size_kb is None:
        yield
        return
    cap = size_kb * 1024 + int(extra_gb * 1e9)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    except (MemoryError, RuntimeError) as err:
        text = str(err)
        if isinstance(err, MemoryError) or "allocate" in text or "out of memory" in text:
            asked = re.search(r"allocate:? (?:memory: you tried to allocate )?(\d+) bytes", text)
            block = f": one block of {int(asked[1]) / 1e9:.1f} GB" if asked else ""
            raise MemoryCapExceeded(
                f"needs more than {extra_gb:g} GB beyond the process's memory{block} "
                f"({type(err).__name__})"
            ) from err
        raise
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
