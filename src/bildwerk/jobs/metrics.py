"""Prometheus metrics of the job service, in a registry of its own (one per app, so tests
and several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class JobMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("bildwerk_queue_depth", "Jobs queued or running.", registry=r)
        self.in_flight = Gauge("bildwerk_jobs_in_flight", "Jobs being generated now.", registry=r)
        self.accepted = Counter("bildwerk_jobs_accepted_total", "Jobs accepted.", ["api"], registry=r)
        self.rejected = Counter("bildwerk_requests_rejected_total", "Requests refused before queueing.",
                                ["reason"], registry=r)
        self.finished = Counter("bildwerk_jobs_finished_total", "Jobs that ended.", ["status"], registry=r)
        self.failures = Counter("bildwerk_job_failures_total", "Failed jobs by error type.", ["type"], registry=r)
        self.latency = Histogram("bildwerk_job_seconds", "From acceptance to the end of a job.", ["api"],
                                 buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800), registry=r)
        self.batch_rows = Histogram("bildwerk_batch_rows", "Rows (images, twice with guidance) in each UNet call.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.run_time = Histogram("bildwerk_generation_seconds", "Time spent generating one job.", ["engine"],
                                  buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300), registry=r)
