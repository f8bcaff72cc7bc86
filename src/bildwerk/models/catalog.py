"""What bildwerk can use, by kind: one entry per checkpoint, LoRA, embedding, ControlNet and VAE.

The entries are built from the asset listings (``models.assets``: bildwerk's own folders, then
registered A1111/ComfyUI folders, read in place) without loading any weights: a diffusers
folder tells its family from its configs, a single ``.safetensors`` file from its header
(``models.inspect``). Every face (``bildwerk models``, ``/api/v1/models``, ``/sdapi/v1``) lists
from here, so they agree on names, kinds and what each model can do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from bildwerk.core.errors import BildwerkError, ModelNotFoundError
from bildwerk.models.assets import (
    ASSET_KINDS,
    Asset,
    AssetKind,
    AssetNotFoundError,
    find_asset,
    list_assets,
)
from bildwerk.models.inspect import FileInfo, inspect_file
from bildwerk.models.loader import (
    EMBEDDED_DEFAULT,
    chosen_default,
    family_of,
    model_languages,
    native_size_of,
    read_bildwerk_config,
    recommended_guidance,
)
from bildwerk.models.safety import model_components

Mode = Literal["text-to-image", "image-to-image", "inpaint"]
# Every checkpoint bildwerk drives does all three (a 4-channel model inpaints by latent masking).
CHECKPOINT_MODES: list[Mode] = ["text-to-image", "image-to-image", "inpaint"]
EMBEDDED = "embedded"  # the source label of the model shipped inside the package
_MAX_FILES = 200
# The size each family was trained at (SD 2.x's v-prediction models at 768).
_NATIVE_SIZES = {("sd1", False): 512, ("sd1", True): 512, ("sd2", False): 512, ("sd2", True): 768,
                 ("sdxl", False): 1024, ("sdxl", True): 1024}  # a show lists at most this many files of a folder


class CatalogEntry(BaseModel):
    """One usable model file or folder, as every listing shows it."""

    name: str = Field(description="What a user writes: --model NAME, <lora:NAME:0.8>, a ControlNet's name.")
    kind: AssetKind
    family: str | None = Field(None, description="sd1, sd2, sdxl, sentence (sd: SD 1.x or 2.x, untold); for a LoRA, embedding, "
                                                 "ControlNet or VAE the base family it fits. None: unknown.")
    variant: str | None = Field(None, description="inpaint, v (v-prediction), refiner, a LoRA's layout "
                                                  "(kohya, diffusers, peft), ... when the weights say so.")
    modes: list[Mode] = Field(default_factory=list, description="What a checkpoint can do; empty for other kinds.")
    bytes: int = 0
    source: str = Field(description="'bildwerk' (its own folders), 'embedded', or the registered folder.")
    layout: str = Field("bildwerk", description="bildwerk, a1111 or comfyui: whose folder it sits in.")
    path: Path
    is_folder: bool = False
    default: bool = False
    languages: list[str] | None = Field(None, description="Prompt languages (checkpoints); None: any.")
    native_size: int | None = None
    guidance: float | None = None
    details: dict[str, Any] = Field(default_factory=dict, description="What the file's header tells "
                                                                       "(a LoRA's rank, ...).")

    @property
    def filename(self) -> str:
        return self.path.name


def _inspect(path: Path) -> FileInfo | None:
    """What the file's header says (kind, family, variant, details); None for a file that cannot
    be read (listed, as unknown, so the user sees it and ``show`` says why)."""
    try:
        return inspect_file(path)
    except BildwerkError:
        return None


def _folder_bytes(path: Path) -> int:
    try:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    except OSError:
        return 0


def _layout_of(source: str) -> str:
    if source in ("bildwerk", EMBEDDED):
        return "bildwerk"
    from bildwerk.models.assets import sources

    for s in sources():
        if str(s.path) == source:
            return s.layout
    return "bildwerk"


def _folder_variant(path: Path) -> str | None:
    """A diffusers pipeline folder's variant from its UNet and scheduler configs."""
    try:
        unet = json.loads((path / "unet" / "config.json").read_text("utf-8"))
        if int(unet.get("in_channels", 4)) == 9:
            return "inpaint"
        sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text("utf-8"))
        if sched.get("prediction_type") == "v_prediction":
            return "v"  # as the header inspector names it
    except (OSError, ValueError, TypeError):
        return None
    return None


def _sd_version(path: Path) -> str:
    """SD 1.x (CLIP ViT-L, 768 wide) or 2.x (OpenCLIP ViT-H, 1024) from the text encoder's config;
    "sd" when its width is neither (small test models)."""
    try:
        width = json.loads((path / "text_encoder" / "config.json").read_text("utf-8")).get("hidden_size")
    except (OSError, ValueError, AttributeError):
        return "sd"
    return {768: "sd1", 1024: "sd2"}.get(width, "sd")


def _checkpoint_folder(asset: Asset, default: bool) -> CatalogEntry:
    path = asset.path
    try:
        config = read_bildwerk_config(path)
    except Exception:  # noqa: BLE001 - a broken bildwerk.json lists the model as unknown
        config = {}
    languages = model_languages(str(path))
    family = family_of(config, model_components(path))
    return CatalogEntry(
        name=asset.name, kind="checkpoint", family=_sd_version(path) if family == "sd" else family,
        variant=_folder_variant(path), modes=list(CHECKPOINT_MODES), bytes=_folder_bytes(path),
        source=asset.source, layout=_layout_of(asset.source), path=path, is_folder=True, default=default,
        languages=list(languages) if languages is not None else None, native_size=native_size_of(str(path)),
        guidance=recommended_guidance(str(path)))


def _file_entry(asset: Asset, default: bool) -> CatalogEntry:
    info = _inspect(asset.path)
    details = dict(info.details) if info is not None else {"unreadable": True}
    if info is not None and info.kind is not None and info.kind != asset.kind:
        details["looks_like"] = info.kind  # e.g. a LoRA dropped into the checkpoints folder
    entry = CatalogEntry(
        name=asset.name, kind=asset.kind, family=info.family if info else None,
        variant=info.variant if info else None, bytes=asset.path.stat().st_size, source=asset.source,
        layout=_layout_of(asset.source), path=asset.path, details=details, default=default)
    if asset.kind == "checkpoint":
        entry.modes = [] if "looks_like" in details else list(CHECKPOINT_MODES)  # a LoRA in the wrong folder can do nothing
        entry.languages = ["en"]  # CLIP-conditioned single files read English
        entry.native_size = _NATIVE_SIZES.get((entry.family or "", entry.variant == "v"))
    return entry


def _entry(asset: Asset, default: bool = False) -> CatalogEntry:
    if asset.kind == "checkpoint" and asset.is_folder:
        return _checkpoint_folder(asset, default)
    if asset.is_folder:  # a diffusers ControlNet or VAE folder: its config names the class
        return CatalogEntry(name=asset.name, kind=asset.kind, bytes=_folder_bytes(asset.path), source=asset.source,
                            layout=_layout_of(asset.source), path=asset.path, is_folder=True,
                            details=_model_config_details(asset.path))
    return _file_entry(asset, default)


def _model_config_details(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return {"class": config.get("_class_name")} if isinstance(config, dict) and config.get("_class_name") else {}


def embedded_entry() -> CatalogEntry | None:
    """The model shipped inside the package, when it is there."""
    if not (EMBEDDED_DEFAULT / "model_index.json").is_file():
        return None
    asset = Asset("default", "checkpoint", EMBEDDED_DEFAULT, EMBEDDED)
    return _checkpoint_folder(asset, default=chosen_default() is None)


def catalog(kind: AssetKind | None = None) -> list[CatalogEntry]:
    """Every entry of ``kind`` (all kinds when None), checkpoints first, each kind by name."""
    chosen = chosen_default()
    out: list[CatalogEntry] = []
    for k in ASSET_KINDS if kind is None else (kind,):
        if k == "checkpoint":
            embedded = embedded_entry()
            if embedded is not None:
                out.append(embedded)
        for asset in list_assets(k):
            if k == "checkpoint" and asset.name == "default":
                continue  # "default" always means the default model, never a file of that name
            out.append(_entry(asset, default=k == "checkpoint" and asset.source == "bildwerk"
                              and asset.name == chosen))
    return out


def find_entries(name: str, kind: AssetKind | None = None) -> list[CatalogEntry]:
    """The entries called ``name`` (one per kind at most), or the listings' not-found error."""
    if kind == "checkpoint" or kind is None:
        if name.strip() == "default":
            embedded = embedded_entry()
            if embedded is not None:
                return [embedded]
    found: list[CatalogEntry] = []
    errors: list[AssetNotFoundError] = []
    for k in ASSET_KINDS if kind is None else (kind,):
        try:
            found.append(_entry(find_asset(k, name), default=False))
        except AssetNotFoundError as exc:
            errors.append(exc)
    if not found:
        if kind is not None or any("pickle" in str(e) for e in errors):
            raise next((e for e in errors if "pickle" in str(e)), errors[0])
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise AssetNotFoundError(f"no model, LoRA, embedding, ControlNet or VAE named {shown!r}; "
                                 "`bildwerk models list` lists them")
    chosen = chosen_default()
    for e in found:
        e.default = e.kind == "checkpoint" and e.source == "bildwerk" and e.name == chosen
    return found


def folder_files(entry: CatalogEntry) -> list[tuple[str, int]]:
    """(path relative to the entry, bytes) of its files: a folder's, or the one file."""
    if not entry.is_folder:
        return [(entry.path.name, entry.bytes)]
    rows = []
    for f in sorted(entry.path.rglob("*")):
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(entry.path).parts):
            rows.append((str(f.relative_to(entry.path)), f.stat().st_size))
            if len(rows) >= _MAX_FILES:
                break
    return rows


__all__ = ["CHECKPOINT_MODES", "CatalogEntry", "ModelNotFoundError", "catalog", "embedded_entry",
           "find_entries", "folder_files"]
