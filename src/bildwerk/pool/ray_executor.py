"""The Ray executor: a pool plan's items rendered on a Ray cluster with Ray Data.

    driver:  items --ray.data.from_items--> map_batches(PoolActor, ActorPoolStrategy(actors))
                                                 |  one actor per engine: one Generator, the
                                                 |  model loaded once, each batch through the
                                                 |  same pool.render.render the local executor uses
             Rendered <--PNG bytes, decoded here-- rows, streamed back as batches finish
             the runner files them (one writer: the folder and its manifest stay on the driver)

Pictures are bit-identical to a local run of the same items: the same job spec per item
(``render.item_spec``), the same seed, the same batched path on a batch-invariant UNet. (The
same computation, that is: the same device, dtype and torch thread count. Floating-point sums
are ordered by the thread count, so 1 thread and 2 threads on a CPU give pictures a few
levels apart; give the local run ``BILDWERK_THREADS`` equal to ``model_threads`` to compare.)
Ids are the plan's deterministic ids and only the driver writes the folder, so a resumed,
stopped or partly failed Ray run and a local run agree on what is done: every planned picture
is made once, whichever executor made it.

Where things run
    ``address=None`` starts a small cluster inside this process (all usable cores of this
    machine, no dashboard, Ray's INFO logs off), or uses the one ``ray.init`` already made
    here; ``address="auto"`` (or ``"HOST:6379"``) joins a running cluster from one of its
    nodes, ``"ray://HOST:10001"`` goes through Ray Client (``ray[client]`` on this machine). A
    cluster this executor started is shut down by :meth:`RayExecutor.close` (or leaving the
    ``with`` block); from a joined one it disconnects. bildwerk must be importable on every
    node (install it there, or pass ``runtime_env={"py_modules": [...]}``) and the plan's
    model must be reachable from every node: a path on storage every node mounts, a name in
    each node's models folder, or a hub id each node can fetch (or has cached). The output
    folder is written by the driver alone: only the driver's machine needs it.

Sizing (see :func:`size_actors`)
    ``actors`` engines run side by side, each loading the model once. ``num_gpus=None`` (the
    default) gives each actor a GPU when the cluster has GPUs: 1 per actor while there are
    enough, else an even share so every actor fits (4 actors on 2 GPUs: 0.5 each, two engines
    per GPU; check that two copies of the model and their batches fit in one GPU's memory).
    ``num_gpus=0`` keeps the actors on CPU even where GPUs exist; a fraction such as 0.5 asks
    for that share explicitly. ``num_cpus=None`` is 1 per GPU actor, and for CPU actors the
    cluster's cores split evenly between them (never more than the largest node has). Each
    actor's torch uses ``model_threads`` threads (default: its whole CPU count, at least 1),
    so actors x threads stays within the cores Ray reserves for them; the count reaches the
    actor as ``BILDWERK_THREADS`` (core/threads.py) and ``OMP_NUM_THREADS``.

Stopping and failures
    The dataset streams: pictures come back as batches finish, and the runner files each at
    once. When ``stop()`` turns true (checked 5 times a second, also while waiting) the
    executor returns at once and the dataset is torn down: its actors end (when no picture had
    come back yet, once the first one does, or when the cluster is shut down). Items in flight
    in the cluster then are lost: nothing is recorded until the driver has a picture, so a
    resumed run makes them again, identically. A failing item comes back as a ``Rendered``
    with its error (recorded as failed, tried again on resume); one item's failure never
    fails its batch. An actor that cannot load the plan's model fails the run at its first
    batch with that error (as the local executor does before its first item). An actor that
    dies (a node lost, out of memory, a crash) is replaced (the new one loads the model
    again) and its batches are retried, up to
    ``max_task_retries`` times each (default 3; Ray Data's own default is forever, which an
    item that crashes its process would turn into an endless loop). A batch that still fails
    fails the run, or, with ``max_errored_blocks > 0``, up to that many such batches are
    skipped and their items reported failed (``ray_lost``; every item of the batch, so keep
    batches small where that matters).

Cost
    Every ``render`` call is one dataset: its actors start and load the model once for it.
    The runner calls it once for the plan and once per top-up round (only when gates reject
    pictures), so a top-up round pays an actor start again; rounds use at most as many
    actors as they have batches. On 2 shared CPU cores: a local cluster starts in 6-12 s
    and shuts down in 1.5 s; an actor answers its first batch 12-15 s after its dataset
    starts (a worker process, the imports, the model load); after that it renders as fast
    as the local executor (its PNG encoding runs beside the driver's filing).
"""

from __future__ import annotations

import io
import logging
import math
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from bildwerk.app.batching import DEFAULT_MAX_ROWS
from bildwerk.app.generate import Generator
from bildwerk.core.errors import BildwerkError, InvalidRequestError
from bildwerk.core.threads import ENV as THREADS_ENV
from bildwerk.core.threads import usable_cpus
from bildwerk.pool.plan import PoolItem, PoolPlan
from bildwerk.pool.render import Rendered, check_plan, error_text, first_spec, render

log = logging.getLogger(__name__)

RAY_MISSING = "the Ray executor needs Ray Data on this machine and every node: pip install 'ray[data]'"

# Variables a cluster started here passes on to its actors as they are at each run (the
# cluster's processes otherwise keep the environment of the moment it started).
FORWARDED_PREFIXES = ("BILDWERK_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DIFFUSERS_")
FORWARDED_NAMES = ("PYTHONPATH",)

# The queue between the thread that reads the dataset and the generator the runner reads:
# bounded, so a slow driver (gates, disk) holds the cluster back instead of its memory filling.
_QUEUE_ROWS = 64
_POLL_S = 0.2


class RayExecutorError(BildwerkError):
    """The Ray run itself failed (the cluster, an actor's start, a dataset error)."""

    code = "ray_failed"


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is what this executor needs
    except ImportError:
        raise RayExecutorError(RAY_MISSING) from None
    return ray


_quieted = False


def _quiet_ray_data() -> None:
    """Ray Data's console output down to warnings (its INFO lines: progress, "execution
    finished"; they stay in the session's ray-data.log), and its one-time notice that progress
    bars are off (this executor turns them off: the runner reports progress)."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    try:
        from ray.util.debug import log_once

        log_once("ray_data_progress_manager_disabled")  # consumed here, so never printed
        for h in logging.getLogger("ray.data").handlers:
            if not isinstance(h, logging.FileHandler) and type(h).__name__ != "SessionFileHandler":
                h.setLevel(max(h.level, logging.WARNING))
    except Exception:  # noqa: BLE001 - only output; a Ray without these keeps its own
        pass


@contextmanager
def _quiet_logger(name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


# ---------------------------------------------------------------------- sizing


@dataclass(frozen=True)
class ActorSizing:
    """What each actor asks the cluster for, and the torch threads it uses."""

    actors: int
    num_gpus: float
    num_cpus: float
    threads: int


def size_actors(*, actors: int, cluster_cpus: float, cluster_gpus: float, node_cpus: float | None = None,
                num_gpus: float | None = None, num_cpus: float | None = None,
                model_threads: int | None = None) -> ActorSizing:
    """Per-actor resources for ``actors`` engines on a cluster with these totals
    (``node_cpus``: the largest node's cores; defaults to ``cluster_cpus``)."""
    if actors < 1:
        raise InvalidRequestError("actors must be 1 or more")
    if num_gpus is None:
        gpus = int(cluster_gpus)
        num_gpus = 0.0 if gpus < 1 else 1.0 / math.ceil(actors / gpus)
    if not 0 <= num_gpus <= 1:
        raise InvalidRequestError(f"GPUs per actor must be between 0 and 1 (an engine drives one GPU); got {num_gpus}")
    if num_gpus > 0 and cluster_gpus <= 0:
        raise InvalidRequestError(f"{num_gpus} GPU per actor asked, but the Ray cluster reports no GPUs "
                                  "(use 0 to run on CPU)")
    if num_cpus is None:
        if num_gpus > 0:
            num_cpus = 1.0
        else:
            biggest = node_cpus if node_cpus is not None else cluster_cpus
            num_cpus = float(max(1, min(int(cluster_cpus // actors), int(biggest))))
    if num_cpus <= 0:
        raise InvalidRequestError(f"CPUs per actor must be more than 0; got {num_cpus}")
    threads = model_threads if model_threads is not None else max(1, int(num_cpus))
    if threads < 1:
        raise InvalidRequestError(f"model threads must be 1 or more; got {threads}")
    return ActorSizing(actors=actors, num_gpus=float(num_gpus), num_cpus=float(num_cpus), threads=int(threads))


# ---------------------------------------------------------------------- the actor


class PoolActor:
    """One engine on the cluster: built once per actor, then called once per batch.

    ``__init__`` makes the Generator (or the caller's ``generator_factory()``), checks the plan
    and loads its model; ``__call__`` renders a batch (a pyarrow table with ``id`` and
    ``item`` columns) on ``pool.render.render`` and answers one row per item."""

    def __init__(self, plan: dict[str, Any], max_rows: int = DEFAULT_MAX_ROWS, threads: int | None = None,
                 generator_factory: Callable[[], Generator] | None = None) -> None:
        t0 = time.perf_counter()
        if threads is not None:
            os.environ[THREADS_ENV] = str(threads)  # read where torch is configured (models/devices.py)
        self.plan = PoolPlan.from_data(plan)
        self.max_rows = max_rows
        self.fatal: str | None = None
        self.source: Any = None
        self.ready_s = 0.0
        try:
            self.generator = generator_factory() if generator_factory is not None else Generator()
            self.source = check_plan(self.generator, self.plan)
            self.generator.load(self.plan.settings.model)
            self.ready_s = time.perf_counter() - t0
            log.info("pool actor ready in %.1f s (pid %d)", self.ready_s, os.getpid())
        except Exception as exc:  # noqa: BLE001 - reported with the first batch, so the driver says why
            self.fatal = error_text(exc)
            log.warning("pool actor cannot run the plan: %s", self.fatal)

    def __call__(self, batch: Any) -> Any:
        items = [PoolItem.model_validate_json(s) for s in batch.column("item").to_pylist()]
        if self.fatal is not None:
            return _table([Rendered(i, error=self.fatal) for i in items], fatal=True)
        return _table(list(self._render(items)))

    def _render(self, items: list[PoolItem]) -> Iterator[Rendered]:
        done: set[str] = set()
        try:
            for r in render(self.generator, self.plan, items, source=self.source, max_rows=self.max_rows):
                done.add(r.item.id)
                yield r
            return
        except Exception as exc:  # noqa: BLE001 - something escaped the shared path (not a BildwerkError)
            log.warning("a batch failed (%s); its remaining items are made one by one", error_text(exc))
        # The batch's state is gone; each remaining item alone (the same picture: same seed,
        # batch-invariant UNet), so one bad item fails alone.
        for item in items:
            if item.id in done:
                continue
            try:
                yield from render(self.generator, self.plan, [item], source=self.source, max_rows=self.max_rows)
            except Exception as exc:  # noqa: BLE001
                yield Rendered(item, error=error_text(exc))


def _table(outs: list[Rendered], *, fatal: bool = False) -> Any:
    import pyarrow as pa

    return pa.table({
        "id": pa.array([r.item.id for r in outs], pa.string()),
        "png": pa.array([r.png for r in outs], pa.binary()),
        "model": pa.array([r.model for r in outs], pa.string()),
        "prompt": pa.array([r.prompt for r in outs], pa.string()),
        "seconds": pa.array([float(r.seconds) for r in outs], pa.float64()),
        "error": pa.array([r.error for r in outs], pa.string()),
        "fatal": pa.array([fatal] * len(outs), pa.bool_()),
    })


def _rendered(item: PoolItem, row: dict[str, Any]) -> Rendered:
    png = row.get("png")
    if not png:
        return Rendered(item, error=row.get("error") or "no picture", seconds=float(row.get("seconds") or 0.0))
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    image.load()
    return Rendered(item, png=bytes(png), image=image, model=row.get("model"), prompt=row.get("prompt"),
                    seconds=float(row.get("seconds") or 0.0))


# ---------------------------------------------------------------------- the executor


class RayExecutor:
    """Runs a plan's items on a Ray cluster (see the module's text for sizing and failures).

    ``address``: None (a local cluster started here, or the one this process already
    joined), ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:10001"``. ``actors``: engines side by
    side. ``num_gpus`` / ``num_cpus``: per actor (None: sized from the cluster,
    :func:`size_actors`). ``batch_size``: items per Ray Data batch (what an actor renders in
    one call, through the continuous batcher, ``max_rows`` UNet rows per call).
    ``model_threads``: torch threads per actor. ``runtime_env``: Ray's, for the whole job
    (e.g. ``{"py_modules": [...]}``, ``{"env_vars": {...}}``). ``max_task_retries``: how often a
    batch is retried after its actor died. ``max_errored_blocks``: batches that may fail for
    good (after those retries) without failing the run; their items are reported failed.
    ``generator_factory``: a picklable callable building each actor's Generator (a policy,
    prompt backends); default ``Generator()``. ``init_kwargs``: more for ``ray.init``.
    ``log_to_driver``: show the actors' own output here (off: it stays in Ray's session logs).

    On a cluster started here (``address=None``) the actors get this process's ``BILDWERK_*``,
    ``HF_*``, ``TRANSFORMERS_*``, ``DIFFUSERS_*`` and ``PYTHONPATH`` as they are at each run;
    on a joined cluster they keep their nodes' own (pass ``runtime_env={"env_vars": ...}``)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, actors: int = 1, num_gpus: float | None = None,
                 num_cpus: float | None = None, batch_size: int = 8, max_rows: int = DEFAULT_MAX_ROWS,
                 model_threads: int | None = None, runtime_env: dict[str, Any] | None = None,
                 max_errored_blocks: int = 0, max_task_retries: int = 3,
                 generator_factory: Callable[[], Generator] | None = None,
                 init_kwargs: dict[str, Any] | None = None, log_to_driver: bool = False) -> None:
        if actors < 1:
            raise InvalidRequestError("actors must be 1 or more")
        if batch_size < 1 or max_rows < 1:
            raise InvalidRequestError("batch_size and max_rows must be 1 or more")
        if max_errored_blocks < 0 or max_task_retries < 0:
            raise InvalidRequestError("max_errored_blocks and max_task_retries must be 0 or more")
        self.address = address
        self.actors = actors
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.batch_size = batch_size
        self.max_rows = max_rows
        self.model_threads = model_threads
        self.runtime_env = dict(runtime_env or {})
        self.max_errored_blocks = max_errored_blocks
        self.max_task_retries = max_task_retries
        self.generator_factory = generator_factory
        self.init_kwargs = dict(init_kwargs or {})
        self.log_to_driver = log_to_driver
        self._owns_cluster = False  # this executor started the cluster (address None)
        self._did_init = False  # this executor called ray.init (started or joined)
        self._connected = False
        self.sizing: ActorSizing | None = None  # of the last render

    # ------------------------------------------------------------------ cluster

    @property
    def local(self) -> bool:
        """The cluster is one this process starts on this machine (no address, no RAY_ADDRESS)."""
        return self.address is None and not os.environ.get("RAY_ADDRESS")

    def connect(self) -> None:
        """Start or join the cluster (done by the first ``render``; call it to pay the start early)."""
        if self._connected:
            return
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": self.log_to_driver, "logging_level": logging.WARNING,
                                      "namespace": "bildwerk"}
            if self.runtime_env:
                kwargs["runtime_env"] = self.runtime_env
            if self.local:
                kwargs.update(num_cpus=usable_cpus(), include_dashboard=False)
                self._owns_cluster = True
            else:
                kwargs["address"] = self.address
            kwargs.update(self.init_kwargs)
            # A cluster started here says once that Ray turned token authentication on for it:
            # true and fine for a cluster of this process; not worth a line on every run.
            quiet = _quiet_logger("ray._private.authentication.authentication_token_setup",
                                  logging.ERROR if self._owns_cluster else logging.NOTSET)
            try:
                with quiet:
                    ray.init(**kwargs)
                self._did_init = True
            except Exception as exc:  # noqa: BLE001 - one line naming the address
                self._owns_cluster = False
                where = self.address or os.environ.get("RAY_ADDRESS") or "a local cluster"
                raise RayExecutorError(f"cannot start or reach Ray ({where}): {error_text(exc)}") from exc
        _quiet_ray_data()
        self._connected = True

    def close(self) -> None:
        """Shut down the cluster this executor started, or leave the one it joined (which runs
        on); a Ray this process had initialised before is left as it is."""
        if not self._connected:
            return
        self._connected = False
        if self._did_init:
            self._did_init = self._owns_cluster = False
            _ray().shutdown()

    shutdown = close

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resources(self) -> tuple[float, float, float]:
        """(CPUs, GPUs, the largest node's CPUs) of the cluster."""
        ray = _ray()
        total = ray.cluster_resources()
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        biggest = max((float(r.get("CPU", 0)) for r in nodes), default=float(total.get("CPU", 0)))
        return float(total.get("CPU", 0)), float(total.get("GPU", 0)), biggest

    def size(self, actors: int | None = None) -> ActorSizing:
        self.connect()
        cpus, gpus, biggest = self.resources()
        return size_actors(actors=actors or self.actors, cluster_cpus=cpus, cluster_gpus=gpus, node_cpus=biggest,
                           num_gpus=self.num_gpus, num_cpus=self.num_cpus, model_threads=self.model_threads)

    # ------------------------------------------------------------------ runs

    def check(self, plan: PoolPlan) -> None:
        """What the driver can check before a run: the settings always; the model and
        style too for a cluster on this machine (a joined cluster's actors check the model
        where it has to be, and fail the run at their first batch if they cannot load it)."""
        first_spec(plan)
        if self.local:
            check_plan(self.generator_factory() if self.generator_factory is not None else Generator(), plan)

    def _env(self, threads: int) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.local:
            env.update({k: v for k, v in os.environ.items()
                        if k.startswith(FORWARDED_PREFIXES) or k in FORWARDED_NAMES})
        env.update(self.runtime_env.get("env_vars") or {})
        env[THREADS_ENV] = str(threads)
        env.setdefault("OMP_NUM_THREADS", str(threads))
        return env

    def render(self, plan: PoolPlan, items: list[PoolItem], stop: Callable[[], bool]) -> Iterator[Rendered]:
        if not items or stop():
            return
        self.connect()
        ray = _ray()
        # A round with fewer batches than actors starts fewer of them (each loads the model);
        # each still gets the resources and threads the configured count gives it, so every
        # round makes its pictures with the same thread count.
        sizing = self.size()
        sizing = replace(sizing, actors=min(sizing.actors, math.ceil(len(items) / self.batch_size)))
        self.sizing = sizing
        # Every actor gets work: smaller batches when there are fewer items than actors x batch.
        batch_size = max(1, min(self.batch_size, math.ceil(len(items) / sizing.actors)))
        by_id = {i.id: i for i in items}
        ds = ray.data.from_items([{"id": i.id, "item": i.model_dump_json()} for i in items])
        ctx = ds.context
        ctx.max_errored_blocks = self.max_errored_blocks
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.enable_auto_log_stats = False
        resources: dict[str, float] = {"num_cpus": sizing.num_cpus}
        if sizing.num_gpus > 0:
            resources = {"num_gpus": sizing.num_gpus}
            if self.num_cpus is not None:  # else Ray Data reserves 1 CPU per GPU actor itself
                resources["num_cpus"] = sizing.num_cpus
        ds = _map(ds, PoolActor, self.max_task_retries, batch_format="pyarrow", batch_size=batch_size,
                  compute=ray.data.ActorPoolStrategy(size=sizing.actors), **resources,
                  fn_constructor_kwargs={"plan": plan.dump(), "max_rows": self.max_rows,
                                         "threads": sizing.threads, "generator_factory": self.generator_factory},
                  runtime_env={"env_vars": self._env(sizing.threads)})
        log.info("ray: %d items, %d actors x (%s CPU, %s GPU, %d threads), batches of %d", len(items),
                 sizing.actors, sizing.num_cpus, sizing.num_gpus, sizing.threads, batch_size)

        rows: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=_QUEUE_ROWS)
        cancel = threading.Event()
        reader = threading.Thread(target=_read, args=(ds, rows, cancel), name="bildwerk-ray-reader", daemon=True)
        reader.start()
        seen: set[str] = set()
        ended = False
        try:
            while True:
                if stop():
                    return
                try:
                    kind, value = rows.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if kind == "end":
                    ended = True
                    break
                if kind == "error":
                    raise RayExecutorError(f"the Ray run failed: {error_text(value)}") from value
                item = by_id.get(value["id"])
                if item is None or item.id in seen:
                    continue  # not ours, or a retried batch answering twice: the first counts
                if value.get("fatal"):
                    raise RayExecutorError(f"the Ray actors cannot run the plan: {value.get('error')}")
                seen.add(item.id)
                yield _rendered(item, value)
        finally:
            cancel.set()  # the reader stops and closes the dataset's iterator: its actors end
            if not ended:
                _shutdown(ds)  # now, rather than when the reader gets its next row
            # After a stop the reader may be waiting for a row still being made: it is a daemon
            # and ends (closing the dataset) when that row comes; the runner need not wait.
            reader.join(timeout=5.0 if ended else 0.5)
        # Only with max_errored_blocks > 0 can a batch be skipped; say so for each of its items.
        for item in items:
            if item.id not in seen:
                yield Rendered(item, error="ray_lost: the Ray run returned no result for this item "
                                           "(its batch failed after Ray's retries)")


def _map(ds: Any, fn: Any, max_task_retries: int, **kwargs: Any) -> Any:
    """``ds.map_batches`` with the retries of a batch whose actor died bounded. Ray Data's own
    default retries it forever (an item that kills its process would restart actors and reload
    the model without end). Ray 2.60 takes the bound only as a plain remote argument, which it
    marks deprecated; where a later Ray takes it no more, the batch runs with Ray's default."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        try:
            return ds.map_batches(fn, max_task_retries=max_task_retries, **kwargs)
        except TypeError as exc:
            log.warning("this Ray takes no max_task_retries (%s): batches are retried as Ray decides", exc)
            return ds.map_batches(fn, **kwargs)


def _read(ds: Any, rows: queue.Queue[tuple[str, Any]], cancel: threading.Event) -> None:
    """Stream the dataset's rows into ``rows`` until it ends or ``cancel`` is set."""
    it = iter(ds.iter_rows())
    try:
        for row in it:
            while not cancel.is_set():
                try:
                    rows.put(("row", row), timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if cancel.is_set():
                return
        _put(rows, ("end", None), cancel)
    except BaseException as exc:  # noqa: BLE001 - handed to the driver's generator
        if not cancel.is_set():
            _put(rows, ("error", exc), cancel)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()  # tears the streaming execution down (the actors end)
            except Exception:  # noqa: BLE001 - the cluster may already be gone (shutdown)
                pass


def _shutdown(ds: Any) -> None:
    """End a dataset's execution at once (its actors too): the reader may be waiting for a row
    that is minutes away (a model loading). Ray Data keeps the executor on the dataset once the
    first result is out; before that, the reader closes it when that result comes."""
    executor = getattr(ds, "_current_executor", None)
    if executor is None:
        return
    try:
        executor.shutdown(force=True)
    except Exception as exc:  # noqa: BLE001 - best effort; the reader's close does it too
        log.debug("ray: shutting the dataset down: %s", exc)


def _put(rows: queue.Queue[tuple[str, Any]], entry: tuple[str, Any], cancel: threading.Event) -> None:
    while not cancel.is_set():
        try:
            rows.put(entry, timeout=_POLL_S)
            return
        except queue.Full:
            continue
