"""Which engine serves a model reference, by the reference's kind (core/refs.py).

Engines register a factory per kind; a new engine is one ``register_engine`` call, not edits
across the faces. One router per process, so a local model is loaded once and kept (and freed
on a switch), whichever face asked for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from bildwerk.core.refs import LOCAL, OPENAI, reference_kind
from bildwerk.engines.base import Engine
from bildwerk.models.loader import ModelManager

EngineFactory = Callable[[ModelManager], Engine]
_FACTORIES: dict[str, EngineFactory] = {}


def register_engine(kind: str, factory: EngineFactory) -> None:
    """Serve model references of ``kind`` with the engine ``factory(models)`` builds (once)."""
    _FACTORIES[kind] = factory


def _local(models: ModelManager) -> Engine:
    from bildwerk.engines.diffusers_engine import DiffusersEngine

    return DiffusersEngine(models)


def _openai(models: ModelManager) -> Engine:
    from bildwerk.engines.openai_engine import OpenAIImagesEngine

    return OpenAIImagesEngine()


register_engine(LOCAL, _local)
register_engine(OPENAI, _openai)


class EngineRouter:
    def __init__(self, models: ModelManager | None = None, *, remote: Engine | None = None,
                 engines: dict[str, Engine] | None = None) -> None:
        """``engines`` (by kind) and ``remote`` (the OpenAI kind) replace the registered
        factories: a test's stand-in, an evaluation's fake."""
        self.models = models or ModelManager()
        self._engines: dict[str, Engine] = dict(engines or {})
        if remote is not None:
            self._engines[OPENAI] = remote
        self._injected = frozenset(self._engines)
        self._lock = threading.Lock()

    def resolve(self, model_ref: str | None) -> Any:
        """A model reference as its engine will take it: resolved to a ``ModelSource`` for the
        registered local engine (once per spec, then passed on); as written for other kinds and
        for engines given to this router (a stand-in knows its own names)."""
        kind = reference_kind(model_ref)
        if kind == LOCAL and kind not in self._injected:
            from bildwerk.models.loader import resolve_model

            return resolve_model(model_ref)
        return model_ref

    def check(self, model_ref: str | None) -> Any:
        """What can be checked before anything loads: a local reference names a model (whichever
        engine serves it), a remote one a model the service knows. Raises the error a client
        should get now, not from the worker; returns the reference as ``resolve`` gives it."""
        kind = reference_kind(model_ref)
        if kind == OPENAI:
            from bildwerk.core.refs import remote_model_name
            from bildwerk.engines.openai_engine import model_spec

            model_spec(remote_model_name(model_ref))
        elif kind in self._injected:
            from bildwerk.models.loader import resolve_model

            resolve_model(model_ref)
        return self.resolve(model_ref)

    def engine_for(self, model_ref: str | None) -> Engine:
        kind = reference_kind(model_ref)
        with self._lock:
            engine = self._engines.get(kind)
            if engine is None:
                engine = self._engines[kind] = _FACTORIES[kind](self.models)
            return engine

    def describe(self) -> dict[str, Any]:
        loaded = self.models.current
        return {"loaded": loaded.describe() if loaded is not None else None}
