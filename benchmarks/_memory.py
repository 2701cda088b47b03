"""Peak host memory of a measured region on Linux: reset the RSS high-water mark, then read it back.

`reset_peak_rss()` before the region, `rss_bytes("VmRSS")` as its base and `rss_bytes("VmHWM")` after it
give the region's peak resident memory above the base.
"""

from __future__ import annotations

from pathlib import Path


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status in bytes (`"VmRSS"`, `"VmHWM"`); None where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
