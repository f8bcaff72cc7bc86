"""The job store's errors; each carries the ``code`` the REST layer answers with."""

from __future__ import annotations

from pathlib import Path

from bildwerk.core.errors import BildwerkError


class StoreError(BildwerkError):
    """The job store could not do what was asked."""

    code = "store_error"


class QueueFull(StoreError):
    """Too many jobs are waiting or running; the caller should retry later (HTTP 429/503)."""

    code = "queue_full"

    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(
            f"the queue is full: {depth} job(s) waiting or running, limit {limit}; "
            "try again when some have finished"
        )
        self.depth = depth
        self.limit = limit


class JobNotFoundError(StoreError):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        shown = job_id if len(job_id) <= 80 else job_id[:80] + "..."  # echo a bounded part
        super().__init__(f"no job with id {shown!r}")
        self.job_id = job_id


class JobExistsError(StoreError):
    code = "job_exists"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"a job with id {job_id!r} already exists")
        self.job_id = job_id


class JobStateError(StoreError):
    """A transition the job's current status does not allow (finishing a cancelled job...),
    or one asked for by a worker that no longer holds the job (``detail`` says so)."""

    code = "job_state"

    def __init__(self, job_id: str, status: str, action: str, detail: str | None = None) -> None:
        message = f"cannot {action} job {job_id!r}: it is {status}"
        super().__init__(f"{message} ({detail})" if detail else message)
        self.job_id = job_id
        self.status = status
        self.action = action
        self.detail = detail


class ImageNotFoundError(StoreError):
    code = "image_not_found"

    def __init__(self, sha256: str) -> None:
        super().__init__(f"no stored image with sha256 {sha256}")
        self.sha256 = sha256


class CorruptImageError(StoreError):
    """A stored file is missing or its bytes no longer match its hash (disk damage)."""

    code = "corrupt_image"

    def __init__(self, sha256: str, path: Path, reason: str) -> None:
        super().__init__(f"stored image {sha256} is damaged ({reason}): {path}")
        self.sha256 = sha256
        self.path = path


class ExportError(StoreError):
    code = "export_failed"
