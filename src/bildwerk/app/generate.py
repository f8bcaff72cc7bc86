"""The one use case behind every face: a job spec in, results (PNGs with their record) out.

    spec --check--> (model permitted and exists, style exists, remote model known: before anything loads)
         --prompt steps--> request with the model's prompt and its record
         --engine--> GenerationResult (images, seeds, record, PNG bytes)

``run`` does it for one spec. ``start`` stops after the engine's ``prepare`` so a batcher
(app/batching.py) can step many started tasks together; ``Task.finish`` completes one. The
CLI, the demo, the Python API, the service worker, evaluation and training previews all come
through here: the request is validated once (when the spec is built), the seed is drawn once
(ditto), and the model reference is resolved once per spec (``check`` or ``resolve``, through
the router) and passed on to the prompt steps and the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.hires import hires_sizes
from bildwerk.core.loras import merge_loras
from bildwerk.core.refs import LOCAL
from bildwerk.core.spec import JobSpec
from bildwerk.engines.base import (
    BatchEngine,
    CancelToken,
    Engine,
    GenerationResult,
    Prepared,
    ProgressCallback,
    step_to_end,
)
from bildwerk.engines.registry import EngineRouter
from bildwerk.engines.sizing import size_warnings
from bildwerk.models.loader import ModelManager, ModelSource, native_size_of
from bildwerk.models.policy import ModelPolicy
from bildwerk.prompts.pipeline import PromptPipeline, run_prompt_pipeline


@dataclass
class Task:
    """A started spec: either finished already (remote engines, nothing to denoise) or
    prepared for stepping by its engine."""

    spec: JobSpec
    engine: Engine
    prepared: Prepared | None = None
    result: GenerationResult | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or (self.prepared is not None and self.prepared.done)

    @property
    def batched(self) -> bool:
        """Stepped by a batcher (still has denoising to do)."""
        return self.result is None and self.prepared is not None and not self.prepared.done

    def finish(self) -> GenerationResult:
        if self.result is None:
            assert isinstance(self.engine, BatchEngine) and self.prepared is not None
            self.result = self.engine.finish(self.prepared)
        return self.result


class Generator:
    """Turns job specs into results; one per process keeps its models loaded.

    ``policy`` says which model references may be used (models/policy.py): any for the
    operator (the default), the registered ones for a server's clients. It is applied where
    every spec passes, at submission (``check``) and again when a worker starts a job
    (``resolve``), so a stored job cannot bypass it."""

    def __init__(self, router: EngineRouter | None = None, *, pipeline: PromptPipeline | None = None,
                 models: ModelManager | None = None, policy: ModelPolicy | None = None) -> None:
        self.router = router or EngineRouter(models)
        self.pipeline = pipeline  # a PromptPipeline with injected backends (tests, servers), else per spec
        self.policy = policy or ModelPolicy.operator()

    @property
    def models(self) -> ModelManager:
        return self.router.models

    def check(self, spec: JobSpec) -> Any:
        """Everything that can fail before a backend or a model is asked: the model
        reference, the engine's configuration, the prompt steps' names and backends. Raises the
        error the caller should get at submission; returns the resolved model reference (pass
        it on as ``source``)."""
        source = self.check_model(spec.request.model)
        if spec.request.controls:
            self._check_controls(spec, source)
        engine_check = getattr(self.router.engine_for(spec.request.model), "check", None)
        if engine_check is not None:
            engine_check(spec.request)
        self._check_local_options(spec, source)
        (self.pipeline or PromptPipeline()).check(spec.request.prompt, spec.options)
        self.check_loras(spec)
        return source

    @staticmethod
    def _check_controls(spec: JobSpec, source: Any) -> None:
        """ControlNets exist, are safetensors and fit the model's family: at submission."""
        from bildwerk.models.controlnet import check_controls

        if spec.engine_kind != LOCAL:
            raise InvalidRequestError("ControlNet needs a local model; remote engines (openai:) take no control "
                                      "images")
        path = source.path if isinstance(source, ModelSource) else None
        check_controls([u.model for u in spec.request.controls], path)

    def check_loras(self, spec: JobSpec) -> None:
        """The LoRAs a spec names where they can be seen before the prompt steps (its field, the
        prompt's tags, its style's tags) exist, and only a local model is asked to use them."""
        from bildwerk.core.loras import extract_lora_tags
        from bildwerk.models.assets import find_asset

        req = spec.request
        texts = [req.prompt]
        if spec.options.style:
            from bildwerk.prompts.styles import get_style

            texts.append(get_style(spec.options.style).prompt)
        tags = [t for text in texts for t in extract_lora_tags(text)[1]]
        specs, _ = merge_loras(req.loras, tags)
        if specs and spec.engine_kind != LOCAL:
            raise InvalidRequestError(f"LoRAs work with local models only, not {req.model}")
        for lora in specs:
            find_asset("lora", lora.name)

    @staticmethod
    def _check_local_options(spec: JobSpec, source: Any) -> None:
        """Hires fix and the VAE override: local models only; the hires size within bounds at the
        model's own size where the request sets none; the VAE named exists and is safetensors."""
        req = spec.request
        if req.hires is None and req.vae is None:
            return
        if spec.engine_kind != LOCAL:
            used = " and ".join(n for n, v in (("hires", req.hires), ("vae", req.vae)) if v is not None)
            raise InvalidRequestError(f"{used} work with local models only, not with {req.model}")
        if req.hires is not None and (req.width is None or req.height is None):
            native = native_size_of(source if isinstance(source, ModelSource) else req.model)
            if native is not None:
                try:
                    hires_sizes(req.width or native, req.height or native, req.hires)
                except ValueError as exc:
                    raise InvalidRequestError(f"invalid request: {exc}") from None
        if req.vae is not None:
            from bildwerk.models.vae import choose_vae

            choose_vae(req.vae, {})  # asset_not_found (404) or unsafe_model now, not from the worker

    def advise(self, spec: JobSpec, source: Any = None) -> JobSpec:
        """The spec with the use case's warnings in its request (``request.warnings``): the
        size a local model works at when it is not the picture's, a size far from the model's.
        Read from the model's folder, without loading it, so a face can show them before the
        long run and a job's record has them from submission on. Idempotent (a stored job
        advised at submission comes back unchanged)."""
        req = spec.request
        if spec.engine_kind != LOCAL:
            return spec  # remote engines map sizes themselves and say so in their notes
        native = native_size_of(source if isinstance(source, ModelSource) else req.model)
        if native is None:
            return spec
        new = [w for w in size_warnings(req, native) if w not in req.warnings]
        if not new:
            return spec
        return spec.model_copy(update={"request": req.model_copy(update={"warnings": [*req.warnings, *new]})})

    def check_model(self, ref: str | None) -> Any:
        """A model reference the policy permits and that names a model; returns it resolved.
        The policy comes first, so a refused reference is never looked up."""
        self.policy.check(ref)
        return self.router.check(ref)

    def resolve(self, spec: JobSpec) -> Any:
        """The model reference resolved (a ``ModelSource`` for local models; remote references
        as they are): done once per spec, then passed on to the prompt steps and the engine."""
        self.policy.check(spec.request.model)
        return self.router.resolve(spec.request.model)

    def load(self, model_ref: str | None) -> None:
        """Load the model a reference names, before any job for it starts (a worker's
        readiness, not a job's run). Engines with nothing to load (remote) ignore it; a
        failure raises here and again, as the job's error, when the job starts. The policy
        comes first: a stored job naming a refused model must not get it loaded (or fetched)."""
        self.policy.check(model_ref)
        load = getattr(self.router.engine_for(model_ref), "load", None)
        if load is not None:
            load(self.router.resolve(model_ref))

    def with_prompt(self, spec: JobSpec, *, source: Any = None) -> JobSpec:
        """The spec with the prompt steps applied: the model's prompt and how it came about.
        A spec whose request already carries a prompt record comes back as it is."""
        req = spec.request
        if req.prompt_record is not None:
            return spec
        model = source if source is not None else self.resolve(spec)
        rec = run_prompt_pipeline(req.prompt, req.negative_prompt, options=spec.prompt_options,
                                  model=model, image=req.image, pipeline=self.pipeline)
        # The LoRAs to apply: the prompt's (and its style's) tags merged with the loras field.
        loras, notes = merge_loras(req.loras, rec.loras)
        rec.warnings.extend(notes)
        if loras and spec.engine_kind != LOCAL:
            raise InvalidRequestError(f"LoRAs work with local models only, not {req.model}")
        update: dict[str, Any] = {"prompt": rec.prompt, "negative_prompt": rec.negative_prompt,
                                  "prompt_record": rec, "loras": loras}
        return spec.model_copy(update={"request": req.model_copy(update=update)})

    def start(self, spec: JobSpec, *, on_progress: ProgressCallback | None = None,
              cancel: CancelToken | None = None, source: Any = None) -> Task:
        """Prompt steps, then the engine: prepared for stepping, or run to the end where the
        engine has no steps to share (the remote Images API)."""
        source = source if source is not None else self.resolve(spec)
        spec = self.with_prompt(self.advise(spec, source), source=source)
        engine = self.router.engine_for(spec.request.model)
        if isinstance(engine, BatchEngine):
            prepared = engine.prepare(spec.request, on_progress=on_progress,
                                      source=source if isinstance(source, ModelSource) else None)
            return Task(spec, engine, prepared=prepared)
        return Task(spec, engine, result=engine.generate(spec.request, on_progress=on_progress, cancel=cancel))

    def run(self, spec: JobSpec, *, on_progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, source: Any = None) -> GenerationResult:
        """One spec, start to end (stepped alone: the same path as in a batch)."""
        task = self.start(spec, on_progress=on_progress, cancel=cancel, source=source)
        if task.result is None:
            assert isinstance(task.engine, BatchEngine) and task.prepared is not None
            task.result = step_to_end(task.engine, task.prepared, cancel)
        return task.result
