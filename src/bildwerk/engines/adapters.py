"""LoRAs on the loaded model: loaded once by name, kept, switched per request, never leaked.

Each LoRA a request names is found with ``find_asset("lora", name)``, read and checked
(models/lora_files.py), and loaded into the pipeline with diffusers' ``load_lora_weights`` under an
adapter name derived from its content (a file changed on disk is a new adapter). Loaded adapters
stay on the model (at most ``MAX_CACHED``; the least recently used is deleted first), and each
request activates exactly its set with ``set_adapters(names, weights)``; a request without LoRAs
disables them all, so peft's layers compute the base layer alone and a plain request after a LoRA
request gives exactly the plain picture. The active set is part of the engine's ``batch_key``, so
requests with different sets never share a UNet call, and it is re-activated before every call.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bildwerk.core.errors import UnsupportedModelError
from bildwerk.core.loras import LoraSpec
from bildwerk.engines.speed import keep_exact, unfuse_qkv
from bildwerk.models.assets import find_asset
from bildwerk.models.loader import LoadedModel
from bildwerk.models.lora_files import check_fits, read_lora_file, without_text_encoder

MAX_CACHED = 8  # adapters kept on one model; each costs its weights' memory
_CACHE, _ACTIVE = "lora_cache", "lora_active"

# What one request's LoRAs are, as the UNet sees them: ((adapter name, weight), ...).
ActiveSet = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class LoadedLora:
    adapter: str
    name: str
    short_hash: str
    size: int
    family: str | None
    text_encoder: bool  # its text-encoder part was loaded too


@dataclass(frozen=True)
class AppliedLoras:
    active: ActiveSet
    records: list[dict[str, Any]]  # what the result's record says: name, weight, hash, ...
    notes: list[str]


def _lora_file(path: Path) -> Path:
    """A folder (``bildwerk train``'s ``RUN/lora/``) holds its adapter as one safetensors file."""
    if not path.is_dir():
        return path
    files = sorted(path.glob("*.safetensors"))
    if len(files) != 1:
        raise UnsupportedModelError(f"LoRA folder {path.name} should hold one .safetensors file, found {len(files)}")
    return files[0]


def _context_width(model: LoadedModel) -> int:
    width = model.unet.config.cross_attention_dim
    return int(width[0] if isinstance(width, (list, tuple)) else width)


def _cache(model: LoadedModel) -> OrderedDict[tuple, LoadedLora]:
    return model.extras.setdefault(_CACHE, OrderedDict())


def _load(model: LoadedModel, spec: LoraSpec, keep: set[str]) -> tuple[LoadedLora, list[str]]:
    asset = find_asset("lora", spec.name)
    path = _lora_file(asset.path)
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    cache = _cache(model)
    if key in cache:
        cache.move_to_end(key)
        return cache[key], []
    lora = read_lora_file(path, asset.name)
    check_fits(lora, asset.name, family=model.family, context_width=_context_width(model))
    notes: list[str] = []
    state = lora.state
    with_te = lora.has_text_encoder
    if with_te and model.family == "sentence":
        # The default model's text encoder is a sentence encoder, which a CLIP LoRA cannot touch.
        state = without_text_encoder(state)
        with_te = False
        notes.append(f"LoRA {asset.name!r}: its text-encoder part was left out (this model has no CLIP text "
                     "encoder); its UNet part was applied")
    adapter = f"lora_{lora.short_hash}"  # by content: one file under two names is loaded once
    pipe = model.pipe
    if adapter in _present(pipe):
        loaded = LoadedLora(adapter, asset.name, lora.short_hash, stat.st_size, lora.family, with_te)
        cache[key] = loaded
        return loaded, notes
    try:
        with warnings.catch_warnings():  # peft warns on every adapter after the first: that is the point
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            pipe.load_lora_weights(dict(state), adapter_name=adapter)
    except Exception as exc:  # noqa: BLE001 - peft and diffusers raise many types for a misfit
        _drop(pipe, adapter)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(f"LoRA {asset.name!r} does not fit the model {model.name}: {first}") from None
    if adapter not in _present(pipe):
        raise UnsupportedModelError(f"LoRA {asset.name!r} matched no layer of the model {model.name}; "
                                    "is it for another kind of model?")
    keep_exact(model, model.unet)  # the new lora_A/lora_B layers compute per sample too
    loaded = LoadedLora(adapter, asset.name, lora.short_hash, stat.st_size, lora.family, with_te)
    cache[key] = loaded
    keep.add(adapter)
    while len(cache) > MAX_CACHED:
        old_key = next((k for k, v in cache.items() if v.adapter not in keep), None)
        if old_key is None:
            break
        gone = cache.pop(old_key).adapter
        for k in [k for k, v in cache.items() if v.adapter == gone]:
            del cache[k]
        _drop(pipe, gone)
        model.extras[_ACTIVE] = None  # the active set may have named it
    return loaded, notes


def _present(pipe: Any) -> set[str]:
    try:
        return {a for names in pipe.get_list_adapters().values() for a in names}
    except Exception:  # noqa: BLE001 - no peft layers at all
        return set()


def _drop(pipe: Any, adapter: str) -> None:
    if adapter in _present(pipe):
        pipe.delete_adapters(adapter)


def prepare_loras(model: LoadedModel, specs: list[LoraSpec]) -> AppliedLoras:
    """Load (or find loaded) every LoRA of a request; raises a clear error for a bad one."""
    if not specs:
        return AppliedLoras((), [], [])
    if not hasattr(model.pipe, "load_lora_weights"):
        raise UnsupportedModelError(f"the model {model.name} cannot take LoRAs")
    keep: set[str] = set()
    active: list[tuple[str, float]] = []
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    for spec in specs:
        loaded, more = _load(model, spec, keep)
        keep.add(loaded.adapter)
        notes += more
        active.append((loaded.adapter, float(spec.weight)))
        records.append({"name": loaded.name, "weight": spec.weight, "hash": loaded.short_hash,
                        "size": loaded.size, "family": loaded.family, "text_encoder": loaded.text_encoder})
    return AppliedLoras(tuple(active), records, notes)


def activate(model: LoadedModel, active: ActiveSet, specs: list[LoraSpec] | None = None) -> None:
    """Make exactly ``active`` the LoRAs the model computes with (none: all disabled). A job's
    adapter may have been evicted since it was prepared (more than ``MAX_CACHED`` LoRAs among the
    jobs in flight): it is loaded again from ``specs``, under the same content-derived name."""
    if model.extras.get(_ACTIVE) == active:
        return
    pipe = model.pipe
    if active and not {a for a, _ in active} <= _present(pipe):
        if not specs or prepare_loras(model, specs).active != active:
            raise UnsupportedModelError("a LoRA this job uses was unloaded and cannot be loaded again "
                                        "(its file changed on disk?); submit the request again")
    if not active:
        if _cache(model):
            pipe.disable_lora()
    else:
        unfuse_qkv(model)  # fused projections would not see the adapters on to_q/to_k/to_v
        pipe.enable_lora()
        pipe.set_adapters([a for a, _ in active], [w for _, w in active])
    model.extras[_ACTIVE] = active
