"""A process's memory as the benchmarks report it (Linux ``/proc``)."""
from __future__ import annotations

from pathlib import Path


def rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    """``field`` of ``/proc/<pid>/status`` in MB (``VmRSS`` now, ``VmHWM`` the peak); NaN if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")
