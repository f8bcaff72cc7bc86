"""Textual-inversion embeddings: a word in the prompt that names an embedding file.

As in A1111, an embedding is used by writing its name (its file name without ``.safetensors``) in
the prompt or the negative prompt; ComfyUI's ``embedding:NAME`` is accepted too (the prompt steps
turn it into ``NAME`` and keep it from being translated). Each one is loaded into the CLIP
tokenizer and text encoder(s) with diffusers' ``load_textual_inversion`` the first time a prompt
uses it, and kept: it only adds a token, so prompts without the word encode exactly as before.
SDXL files carry one vector set per text encoder (``clip_l``, ``clip_g``). bildwerk's
sentence-encoder model has no CLIP tokenizer and cannot take embeddings.
"""

from __future__ import annotations

import re
from typing import Any

from bildwerk.core.errors import UnsafeModelError, UnsupportedModelError
from bildwerk.core.request import GenerationRequest
from bildwerk.models.assets import Asset, list_assets
from bildwerk.models.inspect import read_header
from bildwerk.models.loader import LoadedModel
from bildwerk.models.lora_files import tensor_data_hash

_LOADED = "embeddings_loaded"  # model.extras: name -> record


def _word(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])", re.IGNORECASE)


def used_embeddings(text: str, assets: list[Asset]) -> list[Asset]:
    """The embeddings whose names appear in ``text`` as whole words (case-insensitive)."""
    return [a for a in assets if _word(a.name).search(text)]


def spell_embeddings(model: LoadedModel, text: str, *, expand: bool = False) -> str:
    """``text`` with each loaded embedding's name written as its token (CLIP's tokenizer lowercases,
    and diffusers finds multi-vector tokens by exact text); ``expand``: also as its extra tokens
    (``name name_1 ...``), for encoders that do not expand them themselves (compel)."""
    for name, rec in (model.extras.get(_LOADED) or {}).items():
        tok, n = rec["token"], rec["vectors"]
        spelled = " ".join([tok] + [f"{tok}_{i}" for i in range(1, n)]) if expand else tok
        text = _word(name).sub(spelled, text)
    return text


def _explicit(request: GenerationRequest) -> list[str]:
    rec = request.prompt_record
    step = rec.step("embeddings") if rec is not None else None
    return list(step.details.get("explicit", [])) if step is not None else []


def _vectors(asset: Asset, sdxl: bool) -> dict[str, Any]:
    path = asset.path
    if path.is_dir():
        raise UnsupportedModelError(f"embedding {asset.name!r} is a folder; an embedding is one .safetensors file")
    try:
        read_header(path)  # pickles (whatever the name), truncated files: refused before loading
    except (UnsafeModelError, UnsupportedModelError) as exc:
        raise type(exc)(f"embedding {asset.name!r}: {exc}") from None
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - a broken file, whatever safetensors says
        raise UnsupportedModelError(f"embedding {asset.name!r} is damaged or incomplete "
                                    f"({type(exc).__name__}); download it again") from None
    if sdxl:
        if not {"clip_l", "clip_g"} <= set(state):
            raise UnsupportedModelError(f"embedding {asset.name!r} is not an SDXL embedding (no clip_l/clip_g "
                                        "vectors); use one made for SDXL")
        return {"clip_l": state["clip_l"], "clip_g": state["clip_g"]}
    if "clip_l" in state or "clip_g" in state:
        raise UnsupportedModelError(f"embedding {asset.name!r} is for SDXL, the model is SD 1.x/2.x")
    for key in ("emb_params", "string_to_param"):
        if key in state:
            return {"vectors": state[key]}
    if len(state) == 1:
        return {"vectors": next(iter(state.values()))}
    raise UnsupportedModelError(f"{path.name} is no textual-inversion embedding (no emb_params)")


def _load(model: LoadedModel, asset: Asset) -> dict[str, Any]:
    pipe = model.pipe
    sdxl = model.family == "sdxl"
    parts = _vectors(asset, sdxl)
    token = asset.name.lower()  # as CLIP's tokenizer sees the word
    pairs = ([("clip_l", pipe.text_encoder, pipe.tokenizer), ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2)]
             if sdxl else [("vectors", pipe.text_encoder, pipe.tokenizer)])
    for key, encoder, tokenizer in pairs:
        vec = parts[key]
        width = int(encoder.get_input_embeddings().weight.shape[1])
        if vec.dim() != 2 or vec.shape[1] != width:
            raise UnsupportedModelError(
                f"embedding {asset.name!r} has {tuple(vec.shape)} vectors; this model's text encoder takes "
                f"{width}-wide ones (is it for another model?)")
        try:
            pipe.load_textual_inversion({token: vec}, token=token, text_encoder=encoder, tokenizer=tokenizer)
        except ValueError as exc:
            raise UnsupportedModelError(f"embedding {asset.name!r} could not be loaded: {exc}") from None
    vectors = int(next(iter(parts.values())).shape[0])
    return {"name": asset.name, "hash": tensor_data_hash(asset.path)[:12], "vectors": vectors, "token": token}


def prepare_embeddings(model: LoadedModel, request: GenerationRequest) -> list[dict[str, Any]]:
    """Load the embeddings the request's prompts name (once per model); their records."""
    explicit = _explicit(request)
    if model.family == "sentence":
        if explicit:
            raise UnsupportedModelError(
                f"the model {model.name} reads prompts with a sentence encoder and cannot use textual-inversion "
                f"embeddings ({', '.join(explicit)}); use an SD or SDXL model")
        return []
    assets = list_assets("embedding")
    if not assets:
        return []
    used = used_embeddings(f"{request.prompt}\n{request.negative_prompt}", assets)
    loaded: dict[str, dict[str, Any]] = model.extras.setdefault(_LOADED, {})
    out = []
    for asset in used:
        if asset.name not in loaded:
            loaded[asset.name] = _load(model, asset)
        out.append({k: v for k, v in loaded[asset.name].items() if k != "token"})
    return out
