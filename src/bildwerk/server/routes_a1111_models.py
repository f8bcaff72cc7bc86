"""A1111's listing endpoints under ``/sdapi/v1``: checkpoints, VAEs, LoRAs, embeddings, and the
refresh calls clients send after copying files in.

The shapes are A1111's own (``modules/api/models.py`` and its Lora extension), so its clients
parse them: a checkpoint's ``title`` is ``name [shorthash]`` (the first 10 hex digits of the
file's SHA-256, computed once and kept, ``models.hashes``), and clients send that title back in
``sd_model_checkpoint``. Where A1111 gives absolute paths (``filename``, a LoRA's ``path``), bildwerk
gives the file's name: an answer never shows where things are on the server. Listings are read
from the folders at each call, so the refresh calls have nothing to do.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request

from bildwerk.models.catalog import CatalogEntry, catalog
from bildwerk.server.app import state
from bildwerk.server.routes_models import visible_entries

router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111"])
_TITLE = re.compile(r"^(?P<name>.+?) \[(?P<hash>[0-9a-fA-F]{8,64})\]$")
_MAX_METADATA_CHARS = 64 * 1024  # a LoRA's training metadata can be large; longer values are cut


def checkpoint_from_title(title: str | None) -> str | None:
    """The model name in an A1111 title (``name [shorthash]`` -> ``name``); other text as it is."""
    if title is None:
        return None
    m = _TITLE.match(title.strip())
    return m.group("name") if m else title


def _hash(entry: CatalogEntry) -> str | None:
    if entry.is_folder:
        return None  # A1111 hashes files; a diffusers folder has none
    from bildwerk.models.hashes import file_sha256

    try:
        return file_sha256(entry.path)
    except OSError:
        return None


def _title(entry: CatalogEntry) -> tuple[str, str | None]:
    """(A1111 title, full SHA-256): ``name [shorthash]`` for a file, the name for a folder."""
    from bildwerk.models.hashes import short_hash

    sha = _hash(entry)
    return (f"{entry.name} [{short_hash(sha)}]" if sha else entry.name), sha


def title_of(request: Request, ref: str | None) -> str:
    """What A1111 shows for the checkpoint ``ref`` (its title, as /sd-models lists it)."""
    if not ref or ref == "default":
        return "default"
    for e in visible_entries(request, "checkpoint"):
        if e.name == ref:
            return _title(e)[0]
    return ref


@router.get("/sd-models")
def sd_models(request: Request) -> list[dict[str, Any]]:
    """The checkpoints clients may name, then the operator's other registered references."""
    from bildwerk.models.hashes import short_hash

    rows = []
    listed: set[str] = set()
    for e in visible_entries(request, "checkpoint"):
        title, sha = _title(e)
        rows.append({"title": title, "model_name": e.name, "hash": short_hash(sha) if sha else None,
                     "sha256": sha, "filename": e.filename, "config": None})
        listed.add(e.name)
    for n in state(request).model_policy.names():
        if n not in listed:  # references the operator registered (a folder, a hub id): named as given
            rows.append({"title": n, "model_name": n, "hash": None, "sha256": None, "filename": n, "config": None})
    return rows


@router.post("/refresh-checkpoints")
def refresh_checkpoints() -> None:
    """Nothing to do: every listing reads the folders when it is asked."""
    return None


@router.get("/sd-vae")
def sd_vae() -> list[dict[str, Any]]:
    return [{"model_name": e.name, "filename": e.filename} for e in catalog("vae")]


def _metadata(entry: CatalogEntry) -> dict[str, Any]:
    """A LoRA's safetensors metadata (kohya's ss_* training notes), as A1111 shows it."""
    if entry.is_folder:
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(entry.path), "pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - an unreadable file lists with no metadata
        return {}
    return {k: v if len(v) <= _MAX_METADATA_CHARS else v[:_MAX_METADATA_CHARS] for k, v in meta.items()}


@router.get("/loras")
def loras() -> list[dict[str, Any]]:
    """A1111's Lora extension shape: name, alias, path (the file's name here), metadata."""
    return [{"name": e.name, "alias": e.name, "path": e.filename, "metadata": _metadata(e)}
            for e in catalog("lora")]


@router.post("/refresh-loras")
def refresh_loras() -> None:
    return None


def _embedding_info(entry: CatalogEntry) -> dict[str, Any]:
    details = entry.details
    shape, vectors = details.get("dim"), details.get("vectors")
    if not isinstance(shape, int) or not isinstance(vectors, int):
        shape, vectors = _first_tensor_shape(entry)
    return {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": shape, "vectors": vectors}


def _first_tensor_shape(entry: CatalogEntry) -> tuple[int | None, int | None]:
    """(width, count) of an embedding's vectors from its first 2-D tensor's shape."""
    if entry.is_folder:
        return None, None
    from safetensors import safe_open

    try:
        with safe_open(str(entry.path), "pt") as f:
            for key in f.keys():
                dims = f.get_slice(key).get_shape()
                if len(dims) == 2:
                    return int(dims[1]), int(dims[0])
                if len(dims) == 1:
                    return int(dims[0]), 1
    except Exception:  # noqa: BLE001 - an unreadable file lists with an unknown shape
        pass
    return None, None


@router.get("/embeddings")
def embeddings(request: Request) -> dict[str, dict[str, Any]]:
    """A1111's shape: ``loaded`` (usable with the current model) and ``skipped`` (made for another
    family). The current model is the loaded one, else the A1111 face's checkpoint."""
    family = _current_family(request)
    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    for e in catalog("embedding"):
        fits = family is None or e.family is None or _coarse(e.family) == _coarse(family)
        (loaded if fits else skipped)[e.name] = _embedding_info(e)
    return {"loaded": loaded, "skipped": skipped}


def _coarse(family: str) -> str:
    """SDXL's two text encoders or SD's one (1.x and 2.x told apart by the embedding's width);
    bildwerk's sentence-encoder models read no CLIP embedding at all."""
    f = family.lower()
    return "sdxl" if "xl" in f else "sentence" if f == "sentence" else "sd"


def _current_family(request: Request) -> str | None:
    st = state(request)
    describe = getattr(st.service, "loaded_model", None)
    current = describe() if callable(describe) else None
    if isinstance(current, dict) and current.get("family"):
        return str(current["family"])
    return None
