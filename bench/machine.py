"""What a benchmark says about the machine it ran on (shared by the scripts in bench/)."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
