"""Which engine serves a model reference: local diffusers, or a remote API (``openai:MODEL``).

One router per process, so a local model is loaded once and kept (and freed on a switch),
whichever face asked for it.
"""

from __future__ import annotations

import threading
from typing import Any

from bildwerk.engines.base import Engine
from bildwerk.models.loader import ModelManager


class EngineRouter:
    def __init__(self, models: ModelManager | None = None, *, remote: Engine | None = None) -> None:
        self.models = models or ModelManager()
        self._local: Engine | None = None
        self._remote = remote
        self._lock = threading.Lock()

    def engine_for(self, model_ref: str | None) -> Engine:
        from bildwerk.engines.openai_engine import is_remote_model

        with self._lock:
            if is_remote_model(model_ref):
                if self._remote is None:
                    from bildwerk.engines.openai_engine import OpenAIImagesEngine

                    self._remote = OpenAIImagesEngine()
                return self._remote
            if self._local is None:
                from bildwerk.engines.diffusers_engine import DiffusersEngine

                self._local = DiffusersEngine(self.models)
            return self._local

    def describe(self) -> dict[str, Any]:
        current = getattr(self.models, "_current", None)
        return {"loaded": current.describe() if current is not None else None}
