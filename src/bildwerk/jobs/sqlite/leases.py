"""Worker ids and the liveness check behind the store's leases.

A worker id is ``"{hostname}:{pid}:{random hex}"``. A running job carries the id of the
worker that claimed it and a ``lease_until`` (epoch seconds, ``time.time()``) the worker
keeps pushing forward with ``renew_leases()``. Other processes may take the job back when
the lease has run out, or at once when the id names this host and its process is gone:
so a single server restarted after a SIGKILL recovers its jobs immediately.

Leases compare wall clocks: workers on several hosts sharing one store need synchronised
clocks, and two hosts (or containers) must not report the same hostname with their own
pid namespaces, or a live worker's pid could be taken for a dead one here.
"""

from __future__ import annotations

import os
import secrets
import socket

DEFAULT_LEASE_SECONDS = 30.0

# The ids this process made. An id with our own pid that is not among them belongs to an
# earlier process that had our pid (a container's server restarts as pid 1 again): dead.
_OURS: set[str] = set()


def new_worker_id() -> str:
    """A fresh id for a worker of this process; make it in the process that uses it
    (after a fork the pid in an inherited id is the parent's)."""
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
    _OURS.add(worker_id)
    return worker_id


def _pid_is_dead(pid: int) -> bool:
    if pid <= 0:
        return False  # not a process id: os.kill would signal a whole process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    except OSError:
        return False  # cannot tell: leave it to the lease
    try:
        # A killed child its parent has not reaped yet is a zombie: it answers signal 0
        # but will never renew a lease again (Linux only; elsewhere the lease decides).
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"Z"
    except (OSError, ValueError):
        return False


def holder_is_dead(worker_id: str, hostname: str | None = None) -> bool:
    """True when ``worker_id`` names a process on this host that no longer runs.

    False for ids of other hosts, ids not in the ``new_worker_id()`` form, and
    processes that may be alive: only the lease can tell for those.
    """
    host, sep, rest = worker_id.rpartition(":")
    host, sep2, pid_text = host.rpartition(":")
    if not (sep and sep2 and rest and pid_text.isdigit()):
        return False
    if host != (socket.gethostname() if hostname is None else hostname):
        return False
    if int(pid_text) == os.getpid():
        return worker_id not in _OURS
    return _pid_is_dead(int(pid_text))
