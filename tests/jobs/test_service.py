"""The job service without HTTP: the worker outlives failures, cancels, positions, drains."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from PIL import Image

from bildwerk.core.errors import GenerationCancelled, InvalidRequestError
from bildwerk.engines.base import GenerationResult, ProgressEvent
from bildwerk.engines.registry import EngineRouter
from bildwerk.jobs.service import JobService
from bildwerk.jobs.store import QueueFull, Store


class FakeEngine:
    """Fails on prompts containing 'boom', waits on 'slow' until released or cancelled."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    def generate(self, request, *, on_progress=None, cancel=None):
        if "boom" in request.prompt:
            raise RuntimeError("engine exploded")
        if "slow" in request.prompt:
            self.started.set()
            while not self.release.wait(0.01):
                if cancel is not None and cancel.is_set():
                    raise GenerationCancelled("cancelled")
        if on_progress:
            on_progress(ProgressEvent("denoise", 1, 1, 0.0))
        images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(request.num_images)]
        return GenerationResult(request=request, images=images,
                                seeds=[request.seed + i for i in range(request.num_images)],
                                model={"name": "fake"}, scheduler="none", guidance=1.0, width=8, height=8)


def FakeRouter(engine) -> EngineRouter:  # noqa: N802 - reads like the class it stands for
    # Every kind of model reference goes to the fake engine; the real router around it.
    return EngineRouter(engines={"local": engine, "openai": engine})


@pytest.fixture
def service(tmp_path, tiny_models):
    engine = FakeEngine()
    svc = JobService(Store(tmp_path / "store"), FakeRouter(engine), max_queued=3, warmup_model=None,
                     poll_interval=0.02)
    svc.model = str(tiny_models["sd"])
    svc.engine = engine
    svc.start()
    yield svc
    engine.release.set()
    svc.stop(drain_timeout=5)


def _wait(svc, job_id):
    return asyncio.run(svc.wait(job_id, timeout=20))


def _submit(svc, prompt, **kw):
    return svc.submit({"prompt": prompt, "model": svc.model, "steps": 1, **kw}, api="native")


def test_worker_survives_a_crashing_job(service):
    bad = _submit(service, "boom")
    good = _submit(service, "fine", seed=3, num_images=2)
    assert _wait(service, bad.id).status == "failed"
    row = service.store.get(bad.id)
    assert row.error_type == "internal" and "engine exploded" in row.error_message
    done = _wait(service, good.id)
    assert done.status == "succeeded" and [r.seed for r in done.results] == [3, 4]


def test_cancel_running_job_and_queue_position_and_bound(service):
    slow = _submit(service, "slow")
    assert service.engine.started.wait(10)
    a, b = _submit(service, "a"), _submit(service, "b")
    assert service.status(a.id)["position"] == 1 and service.status(b.id)["position"] == 2
    with pytest.raises(QueueFull) as full:
        _submit(service, "c")
    assert full.value.retry_after >= 1
    assert service.cancel(slow.id) == "cancelling"
    assert _wait(service, slow.id).status == "cancelled"
    assert _wait(service, b.id).status == "succeeded"


def test_invalid_requests_are_refused_before_queueing(service):
    with pytest.raises(InvalidRequestError):
        _submit(service, "x", width=100)
    with pytest.raises(InvalidRequestError, match="unknown style"):
        from bildwerk.core.prompt import PromptOptions

        service.submit({"prompt": "x", "model": service.model}, api="native", options=PromptOptions(style="nope"))
    assert service.store.count() == 0


def test_stop_hands_an_unfinished_job_back_to_the_queue(tmp_path, tiny_models):
    engine = FakeEngine()
    svc = JobService(Store(tmp_path / "s"), FakeRouter(engine), warmup_model=None, poll_interval=0.02)
    svc.start()
    row = svc.submit({"prompt": "slow", "model": str(tiny_models["sd"]), "steps": 1}, api="native")
    assert engine.started.wait(10)
    t0 = time.monotonic()
    svc.stop(drain_timeout=0.2)  # the job does not finish in time: it is cancelled and requeued
    assert time.monotonic() - t0 < 10
    assert svc.store.get(row.id).status == "queued"
