"""bildwerk: self-hosted, multilingual image generation.

``from bildwerk import Bildwerk`` is the Python face (api.py), ``Pool`` the pools' (pool/pool.py); the names load on first use,
so ``import bildwerk`` (and ``bildwerk --help``) stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Bildwerk", "GenerationResult", "JobSpec", "Pool", "PromptOptions"]

_LAZY = {
    "Bildwerk": "bildwerk.api",
    "GenerationResult": "bildwerk.engines.base",
    "JobSpec": "bildwerk.core.spec",
    "Pool": "bildwerk.pool.pool",
    "PromptOptions": "bildwerk.core.prompt",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bildwerk' has no attribute {name!r}")
