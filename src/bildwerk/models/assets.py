"""Where model files are found by name: bildwerk's own folders and registered model sources.

People already keep checkpoints, LoRAs, embeddings, ControlNets and VAEs in an AUTOMATIC1111
or ComfyUI folder. Such a folder is registered as a *source* (``$BILDWERK_HOME/sources.json``)
and read where it is, never copied. Every kind of asset has, in this order of precedence:

* bildwerk's own folder under ``$BILDWERK_HOME`` (``models/``, ``loras/``, ``embeddings/``,
  ``controlnet/``, ``vae/``);
* the matching folders of each registered source, in the order they were added.

An asset is named as A1111 names it: its file name without ``.safetensors`` (``<lora:NAME:0.8>``)
or, for a diffusers folder, the folder's name. Names are looked up in the listings, never joined
onto a path, so a name a client sends cannot reach outside these folders. Only safetensors files
(and diffusers folders) are assets; pickle files found there are listed as refused elsewhere
(``unsafe_files``) so a user learns why an old ``.pt`` embedding does not appear.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from bildwerk.core.errors import InvalidRequestError, ModelNotFoundError
from bildwerk.core.paths import bildwerk_home
from bildwerk.models.safety import WEIGHT_SUFFIXES

AssetKind = Literal["checkpoint", "lora", "embedding", "controlnet", "vae"]
ASSET_KINDS: tuple[AssetKind, ...] = get_args(AssetKind)
Layout = Literal["bildwerk", "a1111", "comfyui"]

# bildwerk's own folder per kind, under $BILDWERK_HOME ("models" is where `models add` installs).
HOME_FOLDERS: dict[AssetKind, str] = {
    "checkpoint": "models", "lora": "loras", "embedding": "embeddings",
    "controlnet": "controlnet", "vae": "vae",
}

# Where each program keeps each kind, relative to its root folder.
LAYOUTS: dict[Layout, dict[AssetKind, tuple[str, ...]]] = {
    "bildwerk": {k: (v,) for k, v in HOME_FOLDERS.items()},
    "a1111": {
        "checkpoint": ("models/Stable-diffusion",),
        "lora": ("models/Lora", "models/LyCORIS"),
        "embedding": ("embeddings",),
        "controlnet": ("models/ControlNet",),
        "vae": ("models/VAE",),
    },
    "comfyui": {
        "checkpoint": ("models/checkpoints",),
        "lora": ("models/loras",),
        "embedding": ("models/embeddings",),
        "controlnet": ("models/controlnet",),
        "vae": ("models/vae",),
    },
}

SOURCES_FILE = "sources.json"
ASSET_SUFFIX = ".safetensors"
_MAX_DEPTH = 4  # subfolders people sort their files into; bounded so a huge tree is not walked


class AssetNotFoundError(ModelNotFoundError):
    """A LoRA, embedding, ControlNet or VAE named in a request that no folder holds."""

    code = "asset_not_found"


@dataclass(frozen=True)
class Source:
    """A folder of another program's models, read in place."""

    path: Path
    layout: Layout

    def folders(self, kind: AssetKind) -> list[Path]:
        return [self.path / rel for rel in LAYOUTS[self.layout][kind]]


@dataclass(frozen=True)
class Asset:
    name: str  # what a user writes: file stem or folder name
    kind: AssetKind
    path: Path  # a .safetensors file or a diffusers folder
    source: str  # "bildwerk" or the source folder it came from

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()


def detect_layout(folder: Path) -> Layout | None:
    """Which program's layout a folder has (A1111's webui root, ComfyUI's root), if any."""
    if (folder / "models" / "Stable-diffusion").is_dir():
        return "a1111"
    if (folder / "models" / "checkpoints").is_dir():
        return "comfyui"
    return None


def _sources_path() -> Path:
    return bildwerk_home() / SOURCES_FILE


def sources() -> list[Source]:
    """The registered sources, in the order they were added (a broken file reads as none)."""
    try:
        data = json.loads(_sources_path().read_text("utf-8"))
    except (OSError, ValueError):
        return []
    out = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and isinstance(item.get("path"), str) and item.get("layout") in LAYOUTS:
            out.append(Source(Path(item["path"]), item["layout"]))
    return out


def _write_sources(items: list[Source]) -> None:
    f = _sources_path()
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"path": str(s.path), "layout": s.layout} for s in items], indent=2), "utf-8")
    os.replace(tmp, f)  # a listing never reads half a file


def add_source(folder: Path, layout: Layout | None = None) -> Source:
    """Register an A1111 or ComfyUI folder (its layout detected unless given); idempotent."""
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise InvalidRequestError(f"{path} is no folder")
    found = layout or detect_layout(path)
    if found is None:
        raise InvalidRequestError(
            f"{path} looks like neither an AUTOMATIC1111 folder (models/Stable-diffusion) nor a ComfyUI "
            "folder (models/checkpoints); give the program's root folder, or --layout a1111|comfyui")
    if found not in LAYOUTS:
        raise InvalidRequestError(f"unknown layout {found!r}; use one of {', '.join(LAYOUTS)}")
    items = [s for s in sources() if s.path != path]
    src = Source(path, found)
    _write_sources(items + [src])
    return src


def remove_source(folder: Path) -> bool:
    """Forget a registered source (its files stay where they are); False when it was not one."""
    path = Path(folder).expanduser().resolve()
    items = sources()
    kept = [s for s in items if s.path != path]
    if len(kept) == len(items):
        return False
    _write_sources(kept)
    return True


def asset_folders(kind: AssetKind) -> list[tuple[str, Path]]:
    """(source label, folder) pairs holding ``kind``, in order of precedence."""
    pairs = [("bildwerk", bildwerk_home() / HOME_FOLDERS[kind])]
    pairs += [(str(s.path), f) for s in sources() for f in s.folders(kind)]
    return pairs


def _walk(folder: Path, depth: int = 0) -> Iterator[Path]:
    """Files and diffusers folders under ``folder``, hidden entries and staging skipped."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return
    for p in entries:
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if any((p / marker).is_file() for marker in ("model_index.json", "config.json")):
                yield p  # a diffusers pipeline or model folder is one asset
            elif depth < _MAX_DEPTH:
                yield from _walk(p, depth + 1)
        elif p.is_file():
            yield p


def list_assets(kind: AssetKind) -> list[Asset]:
    """Every usable asset of ``kind``; a name found twice is the first folder's (precedence)."""
    seen: dict[str, Asset] = {}
    for label, folder in asset_folders(kind):
        for p in _walk(folder):
            if p.is_dir():
                name = p.name
            elif p.suffix.lower() == ASSET_SUFFIX:
                name = p.stem
            else:
                continue
            seen.setdefault(name, Asset(name, kind, p, label))
    return sorted(seen.values(), key=lambda a: a.name.lower())


def unsafe_files(kind: AssetKind) -> list[Path]:
    """Weight files of ``kind`` that are not safetensors (pickles: never loaded)."""
    return [p for _, folder in asset_folders(kind) for p in _walk(folder)
            if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES - {ASSET_SUFFIX}]


_KIND_WORDS: dict[AssetKind, str] = {
    "checkpoint": "model", "lora": "LoRA", "embedding": "embedding", "controlnet": "ControlNet", "vae": "VAE",
}


def find_asset(kind: AssetKind, name: str) -> Asset:
    """The asset of ``kind`` called ``name`` (``.safetensors`` may be written), or a clear error
    naming how to list them. Matching is exact first, then case-insensitive (A1111 on Windows)."""
    wanted = name.strip()
    if wanted.lower().endswith(ASSET_SUFFIX):
        wanted = wanted[: -len(ASSET_SUFFIX)]
    assets = list_assets(kind)
    for a in assets:
        if a.name == wanted:
            return a
    folded = [a for a in assets if a.name.lower() == wanted.lower()]
    if len(folded) == 1:
        return folded[0]
    word = _KIND_WORDS[kind]
    pickles = [p for p in unsafe_files(kind) if p.stem.lower() == wanted.lower()]
    if pickles:
        raise AssetNotFoundError(
            f"{word} {wanted!r} is a pickle file ({pickles[0].name}), which bildwerk never loads because it "
            "can run code; convert it to .safetensors where you trust it")
    shown = wanted if len(wanted) <= 80 else wanted[:80] + "..."
    raise AssetNotFoundError(f"no {word} named {shown!r}; `bildwerk models list --kind {kind}` lists them")
