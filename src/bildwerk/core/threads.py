"""How many CPU threads bildwerk's compute uses: ``--threads`` / ``BILDWERK_THREADS``, else
the cores this process may run on.

Two torch processes with default threads on a shared 2-core machine ran about 8x slower than
with one thread each (OpenMP threads spin-waiting on each other): set this to share cores.
"""

from __future__ import annotations

import os

from bildwerk.core.errors import InvalidRequestError

ENV = "BILDWERK_THREADS"


def usable_cpus() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def thread_count() -> int:
    raw = (os.environ.get(ENV) or "").strip()
    if not raw:
        return usable_cpus()
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise InvalidRequestError(f"{ENV} must be a whole number of threads, 1 or more; got {raw!r}")
    return n
