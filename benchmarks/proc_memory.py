"""Peak resident memory of one phase of a benchmark process, from Linux's /proc/self.

Shared by the benchmarks that report memory (``core_speed.py``, ``peers.py``): reset the peak-RSS
mark (VmHWM) before a phase, read it after.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
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
