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


def test_a_size_far_from_the_models_is_in_the_record_at_submission(service):
    from bildwerk.models.loader import native_size_of

    native = native_size_of(service.model)  # the tiny model's, from its folder's configs
    side = 8 * native  # far: over twice the model's side
    slow = _submit(service, "slow")  # holds the worker: the jobs below stay queued
    assert service.engine.started.wait(10)
    far = _submit(service, "far", width=side, height=side)
    queued = service.store.get(far.id)
    assert queued.status == "queued"
    assert [w for w in queued.request["warnings"] if f"{side}x{side} is far from the model's own "
            f"resolution ({native} px" in w]
    assert service.store.get(_submit(service, "own size").id).request["warnings"] == []
    service.engine.release.set()
    assert _wait(service, slow.id).status == "succeeded"
    done = _wait(service, far.id)
    assert done.record["request"]["warnings"] == queued.request["warnings"]  # said once, kept


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


# ------------------------------------------------------------------ faults (issue 14)


class LoadingEngine(FakeEngine):
    """A fake with a model to load: ``load`` waits until ``loaded`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.loading = threading.Event()
        self.loaded = threading.Event()

    def load(self, source) -> None:
        self.loading.set()
        assert self.loaded.wait(10)


def test_the_model_loads_before_the_job_is_claimed(tmp_path, tiny_models):
    # A worker killed while loading must not charge the job: the claim (an attempt) comes
    # only once the model is there.
    engine = LoadingEngine()
    svc = JobService(Store(tmp_path / "s"), FakeRouter(engine), warmup_model=None, poll_interval=0.02)
    svc.start()
    try:
        row = svc.submit({"prompt": "fine", "model": str(tiny_models["sd"]), "steps": 1}, api="native")
        assert engine.loading.wait(10)
        time.sleep(0.1)
        waiting = svc.store.get(row.id)
        assert (waiting.status, waiting.attempts) == ("queued", 0)
        engine.loaded.set()
        done = _wait(svc, row.id)
        assert (done.status, done.attempts) == ("succeeded", 1)
    finally:
        engine.loaded.set()
        svc.stop(drain_timeout=5)


def test_a_stop_answers_waiters_of_queued_jobs_at_once_and_drains_the_running_one(tmp_path, tiny_models):
    from bildwerk.jobs.service import ServiceStopping

    engine = FakeEngine()
    svc = JobService(Store(tmp_path / "s"), FakeRouter(engine), warmup_model=None, poll_interval=0.02)
    svc.start()
    model = str(tiny_models["sd"])
    slow = svc.submit({"prompt": "slow", "model": model, "steps": 1}, api="native")
    assert engine.started.wait(10)
    queued = svc.submit({"prompt": "later", "model": model, "steps": 1}, api="native")

    async def scenario():
        running = asyncio.create_task(svc.wait(slow.id, timeout=20))
        waiting = asyncio.create_task(svc.wait(queued.id, timeout=20))
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        svc.begin_stop(5)
        with pytest.raises(ServiceStopping) as stopping:
            await waiting
        answered = time.monotonic() - t0
        engine.release.set()  # the running job finishes within the drain
        return answered, stopping.value, await running

    answered, stopping, done = asyncio.run(scenario())
    svc.stop(drain_timeout=5)
    assert answered < 1.0 and stopping.job_id == queued.id and stopping.code == "shutting_down"
    assert done.status == "succeeded"
    left = svc.store.get(queued.id)
    assert (left.status, left.attempts) == ("queued", 0)  # not claimed after the stop


class FullStore(Store):
    """A store whose disk can be made full: image writes (and the probe) meet ENOSPC; with
    ``db_full`` the database refuses the end of a job too."""

    full = False
    db_full = False
    broken = False  # an I/O error that is no full disk (EIO)

    def _write_file(self, sha256, data):
        if self.broken:
            import errno

            raise OSError(errno.EIO, "Input/output error", str(self.root))
        if self.full:
            import errno

            from bildwerk.jobs.sqlite.errors import writes

            with writes():
                raise OSError(errno.ENOSPC, "No space left on device", str(self.root))
        return super()._write_file(sha256, data)

    def probe_space(self, nbytes=1 << 20):
        self._write_file("0" * 64, b"x") if self.full else None

    def fail(self, *args, **kwargs):
        if self.db_full:
            from bildwerk.jobs.store import StoreFullError

            raise StoreFullError("the store's disk is full (the database cannot grow)")
        return super().fail(*args, **kwargs)


def test_a_full_disk_fails_the_running_job_pauses_the_queue_and_heals(tmp_path, tiny_models, monkeypatch):
    from bildwerk.jobs import service as service_module
    from bildwerk.jobs.store import StoreFullError

    monkeypatch.setattr(service_module, "STORE_PROBE_SECONDS", 0.1)
    engine = FakeEngine()
    store = FullStore(tmp_path / "s")
    svc = JobService(store, FakeRouter(engine), warmup_model=None, poll_interval=0.02)
    svc.start()
    model = str(tiny_models["sd"])
    try:
        slow = svc.submit({"prompt": "slow", "model": model, "steps": 1}, api="native")
        assert engine.started.wait(10)
        later = svc.submit({"prompt": "later", "model": model, "steps": 1}, api="native")
        store.full = store.db_full = True  # the disk fills while the job runs
        engine.release.set()
        t0 = time.monotonic()
        with pytest.raises(StoreFullError, match=f"disk is full.*{slow.id}"):
            _wait(svc, slow.id)  # its end cannot be written yet; the caller hears it now
        with pytest.raises(StoreFullError):
            _wait(svc, later.id)
        assert time.monotonic() - t0 < 2
        assert "disk is full" in svc.store_problem and str(tmp_path) not in svc.store_problem
        with pytest.raises(StoreFullError):
            svc.submit({"prompt": "x", "model": model, "steps": 1, "mode": "image-to-image"},
                       api="native", image=Image.new("RGB", (64, 64)))
        time.sleep(0.3)
        assert store.get(later.id).status == "queued"  # the queue waits, no job is burnt

        store.full = store.db_full = False  # space returns: no restart
        deadline = time.monotonic() + 10
        while svc.store_problem is not None and time.monotonic() < deadline:
            time.sleep(0.02)  # the worker's probe finds it
        done = _wait(svc, later.id)
        assert done.status == "succeeded" and svc.store_problem is None
        failed = store.get(slow.id)
        assert (failed.status, failed.error_type) == ("failed", "insufficient_storage")
        assert "could not be saved" in failed.error_message
    finally:
        engine.release.set()
        svc.stop(drain_timeout=5)


def test_a_result_write_that_fails_otherwise_still_ends_the_job(tmp_path, tiny_models):
    store = FullStore(tmp_path / "s")
    store.broken = True
    svc = JobService(store, FakeRouter(FakeEngine()), warmup_model=None, poll_interval=0.02)
    svc.start()
    try:
        row = svc.submit({"prompt": "fine", "model": str(tiny_models["sd"]), "steps": 1}, api="native")
        done = _wait(svc, row.id)  # not left running until a restart
        assert (done.status, done.error_type) == ("failed", "internal")
        assert "OSError" in done.error_message and str(tmp_path) not in done.error_message
    finally:
        svc.stop(drain_timeout=5)
