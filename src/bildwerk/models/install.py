"""Install models under a name (diffusers folders, training runs, single .safetensors files of
any kind, hub ids), remove them, choose the default, and list what is installed.

Installed models live in the models folder (``$BILDWERK_HOME/models/NAME``), where the command
line, Python and the server already find them by name (``--model NAME``,
``models.loader.resolve_model``). ``bildwerk models`` is one face of this module; a REST face
can call the same functions. A folder is checked before it is copied: a diffusers folder of
safetensors weights (``models.safety``) with a text side bildwerk drives. The copy is made
beside the models and swapped in by renames, so a listing never sees half a model.

A single file is sniffed by its bytes (safetensors only), opened by the safetensors library (a
truncated file is refused), told by its header what kind it is (``models.inspect``) and copied
into bildwerk's folder for that kind (``loras/NAME.safetensors``, ``models/NAME.safetensors``,
...) through a staging name and one rename. Files in registered sources are never deleted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from pydantic import BaseModel

from bildwerk.core.errors import (
    InvalidRequestError,
    ModelExistsError,
    ModelNotFoundError,
    UnsafeModelError,
    UnsupportedModelError,
)
from bildwerk.core.paths import bildwerk_home
from bildwerk.models.assets import (
    ASSET_KINDS,
    ASSET_SUFFIX,
    HOME_FOLDERS,
    AssetKind,
    list_assets,
)
from bildwerk.models.loader import (
    BILDWERK_CONFIG,
    DEFAULT_CHOICE_FILE,
    EMBEDDED_DEFAULT,
    chosen_default,
    family_of,
    local_model_names,
    model_languages,
    models_dir,
    native_size_of,
    read_bildwerk_config,
)
from bildwerk.models.policy import DEFAULT_NAMES, is_plain_name
from bildwerk.models.safety import check_model_folder, model_components, sniff_weight_format

# Copies in progress and replaced models wait here: no model_index.json at this level, so the
# listing (and so the server's policy) never names them.
_STAGING = ".incoming"


class InstalledModel(BaseModel):
    """One model of the listing (the REST shape too)."""

    name: str
    path: Path
    family: str | None  # sentence | sd | sdxl; None when bildwerk cannot tell
    native_size: int | None  # px
    bytes: int
    languages: list[str] | None  # None: any language
    default: bool = False


def model_folder(path: Path) -> Path:
    """The diffusers folder ``path`` names: itself, or a training run's final ``model/``."""
    if not (path / "model_index.json").is_file() and (path / "model" / "model_index.json").is_file():
        return path / "model"
    return path


def describe_installed(name: str, path: Path, *, default: bool = False) -> InstalledModel:
    """A model folder's listing entry, read from its configs without loading weights."""
    config = read_bildwerk_config(path)
    languages = model_languages(str(path))
    return InstalledModel(
        name=name, path=path, family=family_of(config, model_components(path)),
        native_size=native_size_of(str(path)), bytes=sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
        languages=list(languages) if languages is not None else None, default=default)


def installed_models() -> list[InstalledModel]:
    """The embedded default (when shipped) and every model in the models folder."""
    chosen = chosen_default()
    rows = []
    if (EMBEDDED_DEFAULT / "model_index.json").is_file():
        rows.append(describe_installed("default", EMBEDDED_DEFAULT, default=chosen is None))
    rows += [describe_installed(n, models_dir() / n, default=n == chosen)
             for n in local_model_names() if n != "default"]
    return rows


def swap_in(new: Path, target: Path, old: Path) -> None:
    """Put the folder ``new`` at ``target`` by renames: a kill at any point leaves the old
    model, the new one, or both (``new``/``old``), never a half-deleted folder."""
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def install_model(path: Path, name: str | None = None, *, force: bool = False,
                  make_default: bool = False) -> InstalledModel:
    """Copy the model at ``path`` (a diffusers folder or a training run) into the models folder
    as ``name`` (default: its bildwerk.json name, else the folder's); ``force`` replaces a model
    of that name; ``make_default`` makes it what "default" (no --model) means."""
    src = model_folder(Path(path).expanduser())
    if not src.is_dir():
        raise ModelNotFoundError(f"{src} is no folder; give a training run's folder or a diffusers model folder")
    if not (src / "model_index.json").is_file():
        raise ModelNotFoundError(f"{src} is not a diffusers model folder (no model_index.json, no model/ in it)")
    check_model_folder(src)  # safetensors only: refused before anything is copied
    config = read_bildwerk_config(src)
    if family_of(config, model_components(src)) is None:
        raise UnsupportedModelError(f"{src} has no text encoder bildwerk knows (and no bildwerk.json conditioning)")
    name = (name or config.get("name") or src.name).strip()
    if not is_plain_name(name) or name in DEFAULT_NAMES:
        raise InvalidRequestError(f"{name!r} cannot be a model's name: use letters, digits, '-' or '_' "
                                 "(not 'default', no '/'); pass --name NAME")
    target = models_dir() / name
    if target.exists() and not force:
        raise ModelExistsError(f"a model named {name!r} is installed already ({target}); pass --force to "
                               "replace it, or choose another --name")
    staging = models_dir() / _STAGING
    staging.mkdir(parents=True, exist_ok=True)
    new = staging / f"{name}.new"
    shutil.rmtree(new, ignore_errors=True)
    shutil.copytree(src, new)
    # Records name the model as the user does (--model NAME), not as its run called it.
    (new / BILDWERK_CONFIG).write_text(json.dumps({**config, "name": name}, indent=2, ensure_ascii=False), "utf-8")
    swap_in(new, target, staging / f"{name}.old")
    if make_default:
        set_default_model(name)
    return describe_installed(name, target, default=chosen_default() == name)


def set_default_model(name: str) -> None:
    """Make the installed model ``name`` what "default" means (BILDWERK_MODEL still wins): a
    diffusers folder in the models folder, or a checkpoint listed by name (a single file there
    or in a registered A1111/ComfyUI folder), as the loader resolves the default."""
    if not is_plain_name(name) or name in DEFAULT_NAMES:
        raise ModelNotFoundError(f"no model {name!r}; `bildwerk models list --kind checkpoint` shows them")
    if not (models_dir() / name / "model_index.json").is_file():
        from bildwerk.models.assets import find_asset

        find_asset("checkpoint", name)  # the listing's own not-found error, naming how to list them
    home = bildwerk_home()
    home.mkdir(parents=True, exist_ok=True)
    (home / DEFAULT_CHOICE_FILE).write_text(name + "\n", "utf-8")


def reset_default_model() -> bool:
    """Go back to the embedded default (no chosen model); False when none was chosen."""
    f = bildwerk_home() / DEFAULT_CHOICE_FILE
    try:
        f.unlink()
    except FileNotFoundError:
        return False
    return True


# -- any kind of file, any source -------------------------------------------------------------

# A new asset's name: what `<lora:NAME:0.8>` and --model NAME can carry (no ':', '<', '>', '/').
_ASSET_NAME = re.compile(r"[\w][\w .+()\[\]-]{0,99}")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
# A diffusers model folder's class -> the kind it is (ControlNet and VAE folders).
_FOLDER_CLASSES: dict[str, AssetKind] = {"ControlNetModel": "controlnet", "ControlNetXSAdapter": "controlnet",
                                         "AutoencoderKL": "vae", "AutoencoderTiny": "vae"}


def _check_asset_name(name: str) -> str:
    name = name.strip()
    if name.lower().endswith(ASSET_SUFFIX):
        name = name[: -len(ASSET_SUFFIX)]
    if name in DEFAULT_NAMES or not _ASSET_NAME.fullmatch(name):
        raise InvalidRequestError(f"{name!r} cannot be a name: use letters, digits, spaces, '.', '-', '_' "
                                  "(not 'default', no '/' or ':', at most 100 characters); give another name")
    return name


def _kind_word(kind: str) -> str:
    return {"checkpoint": "model", "lora": "LoRA", "embedding": "embedding", "controlnet": "ControlNet",
            "vae": "VAE"}.get(kind, kind)


def _inspected_kind(path: Path) -> str | None:
    """The kind the file's header says it is (None: none bildwerk uses); a bad header raises."""
    from bildwerk.models.inspect import inspect_file

    return inspect_file(path).kind


def check_safetensors_file(path: Path) -> None:
    """Refuse a file unless its bytes are safetensors and the library opens it whole."""
    fmt = sniff_weight_format(path)
    if fmt != "safetensors":
        raise UnsafeModelError(
            f"{path} is not a safetensors file (its bytes are {fmt}); bildwerk loads safetensors only, because "
            "pickle checkpoints can run code. Convert it once where you trust it, then add the .safetensors")
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:  # checks the header against the file's length
            f.keys()
    except Exception as exc:  # noqa: BLE001 - the library's many error types, one message
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsupportedModelError(f"{path} is a damaged or truncated safetensors file ({reason}); "
                                    "download or copy it again") from exc


def _existing(kind: AssetKind, name: str) -> Path | None:
    """What of bildwerk's own folder for ``kind`` is called ``name`` (a file or a folder)."""
    folder = bildwerk_home() / HOME_FOLDERS[kind]
    for a in list_assets(kind):
        if a.source == "bildwerk" and a.name.lower() == name.lower():
            return a.path
    for p in (folder / name, folder / f"{name}{ASSET_SUFFIX}"):
        if p.exists():
            return p
    return None


def _retire(path: Path, staging: Path) -> None:
    """Move an installed file or folder aside and delete it (a kill leaves it whole or gone)."""
    staging.mkdir(parents=True, exist_ok=True)
    aside = staging / f"{path.name}.old"
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    elif aside.exists():
        aside.unlink()
    path.rename(aside)
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


def install_file(path: Path, name: str | None = None, *, kind: AssetKind | None = None,
                 force: bool = False) -> tuple[AssetKind, str, Path]:
    """Copy one ``.safetensors`` file into bildwerk's folder for its kind, as ``NAME.safetensors``.
    The kind is read from the file's header; ``kind`` confirms or overrides an unknown one.
    Returns (kind, name, installed path)."""
    src = Path(path).expanduser()
    check_safetensors_file(src)
    seen = _inspected_kind(src)
    if seen in ASSET_KINDS and kind is not None and kind != seen:
        raise InvalidRequestError(f"{src.name} is a {_kind_word(seen)} file, not a {_kind_word(kind)}; "
                                  f"pass --kind {seen} (or leave --kind out)")
    chosen = kind or (seen if seen in ASSET_KINDS else None)
    if chosen is None:
        raise InvalidRequestError(f"cannot tell from its header what {src.name} is; pass --kind "
                                  + "|".join(ASSET_KINDS))
    name = _check_asset_name(name or src.stem)
    old, folder, staging = _claim(chosen, name, force)
    part = staging / f"{name}{ASSET_SUFFIX}.part"
    try:
        with src.open("rb") as fin, part.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 4 * 1024 * 1024)
            fout.flush()
            os.fsync(fout.fileno())
        check_safetensors_file(part)  # what landed is what was checked
        target = folder / f"{name}{ASSET_SUFFIX}"
        if old is not None and old != target:
            _retire(old, staging)  # a folder or differently-cased file of that name
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return chosen, name, target


def _claim(kind: AssetKind, name: str, force: bool) -> tuple[Path | None, Path, Path]:
    """Before an install of ``kind`` as ``name``: what it replaces (refused without ``force``),
    the kind's folder and its staging folder, made."""
    old = _existing(kind, name)
    if old is not None and not force:
        raise ModelExistsError(f"a {_kind_word(kind)} named {name!r} is installed already ({old}); pass "
                               "--force to replace it, or choose another --name")
    folder = bildwerk_home() / HOME_FOLDERS[kind]
    staging = folder / _STAGING
    staging.mkdir(parents=True, exist_ok=True)
    return old, folder, staging


def install_asset_folder(path: Path, name: str | None = None, *, kind: AssetKind | None = None,
                         force: bool = False) -> tuple[AssetKind, str, Path]:
    """Copy a diffusers ControlNet or VAE folder (config.json + safetensors weights) into its
    kind's folder under ``name``."""
    src = Path(path).expanduser()
    try:
        cls = json.loads((src / "config.json").read_text("utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        cls = None
    seen = _FOLDER_CLASSES.get(cls or "")
    chosen = kind or seen
    if chosen is None or chosen == "checkpoint":
        raise InvalidRequestError(f"{src} is a {cls or 'model'} folder, not a model bildwerk installs; give a "
                                  "diffusers pipeline folder, a training run, a ControlNet or VAE folder, or "
                                  "a .safetensors file")
    weights = [p for p in src.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".ckpt")]
    if not any(p.suffix == ASSET_SUFFIX for p in weights):
        raise UnsafeModelError(f"{src} has no .safetensors weights; bildwerk loads safetensors only")
    for p in weights:
        if p.suffix == ASSET_SUFFIX:
            check_safetensors_file(p)
    name = _check_asset_name(name or src.name)
    old, folder, staging = _claim(chosen, name, force)
    new = staging / f"{name}.new"
    shutil.rmtree(new, ignore_errors=True)
    # Only the config and safetensors weights travel: a pickle beside them stays behind.
    shutil.copytree(src, new, ignore=lambda d, names: [n for n in names if Path(n).suffix in (".bin", ".pt", ".ckpt")])
    target = folder / name
    if old is not None and old != target:
        _retire(old, staging)
    swap_in(new, target, staging / f"{name}.old")
    return chosen, name, target


# What diffusers' save_lora_weights (so `bildwerk train --method lora`) names the adapter file.
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def run_lora_file(run: Path) -> Path | None:
    """The LoRA weights of a ``bildwerk train --method lora`` run: ``RUN/lora/`` (or the newest
    checkpoint's ``lora/``), or a ``lora/`` folder given itself; None when there is none."""
    run = Path(run)
    steps = sorted((run / "checkpoints").glob("step-*/lora"),  # by step number: step-10 after step-9
                   key=lambda p: int(p.parent.name[5:]) if p.parent.name[5:].isdigit() else -1)
    for folder in [run, run / "lora", *reversed(steps)]:
        if (folder / LORA_WEIGHTS).is_file():
            return folder / LORA_WEIGHTS
    return None


def _run_name(path: Path) -> str:
    """A LoRA's default name: its run's folder name (``RUN/lora/x`` and
    ``RUN/checkpoints/step-N/lora/x`` -> ``RUN``), else the file's own name."""
    folder = path.parent
    if folder.name != "lora":
        return path.stem
    folder = folder.parent
    if folder.name.startswith("step-") and folder.parent.name == "checkpoints":
        folder = folder.parent.parent
    return re.sub(r"[^\w.+-]+", "-", folder.resolve().name).strip(".-") or "my-lora"


class Installed(BaseModel):
    """What an install did: the kind, the name to use it by, where it went."""

    kind: AssetKind
    name: str
    path: Path
    default: bool = False


def install(target: str | Path, name: str | None = None, *, kind: AssetKind | None = None, force: bool = False,
            make_default: bool = False, allow_hub: bool = True) -> Installed:
    """Install what ``target`` names: a diffusers folder or training run (a model; a LoRA run's
    LoRA with ``kind="lora"``), a LoRA run's ``lora/`` folder, a ControlNet or VAE folder, a
    single ``.safetensors`` file of any kind, or (``allow_hub``) a hub id ORG/NAME, fetched first."""
    text = str(target)
    path = Path(text).expanduser()
    if make_default and kind not in (None, "checkpoint"):
        raise InvalidRequestError("--default is for models (checkpoints), not for a " + _kind_word(kind or ""))
    if path.is_file():
        k, n, p = install_file(path, name, kind=kind, force=force)
    elif path.is_dir():
        lora = run_lora_file(path) if kind in (None, "lora") else None
        is_model = (model_folder(path) / "model_index.json").is_file()
        if lora is not None and (kind == "lora" or not is_model):
            k, n, p = install_file(lora, name or _run_name(lora), kind="lora", force=force)
        elif is_model and kind in (None, "checkpoint"):
            m = install_model(path, name, force=force)
            k, n, p = "checkpoint", m.name, m.path
        elif (path / "config.json").is_file():
            k, n, p = install_asset_folder(path, name, kind=kind, force=force)
        else:
            raise ModelNotFoundError(
                f"{path} holds nothing bildwerk installs: give a diffusers model folder, a training run, a "
                "LoRA run's lora/ folder, a ControlNet or VAE folder, or a .safetensors file")
    elif _HUB_ID.match(text) and not text.startswith((".", "~")) and not Path(text.split("/")[0]).exists():
        # (ORG/NAME whose ORG is a folder here is a mistyped path, not a hub id)
        if not allow_hub:
            raise InvalidRequestError("installing from the Hugging Face Hub is not allowed here")
        if kind not in (None, "checkpoint"):
            raise InvalidRequestError("a hub id installs a diffusers model (a checkpoint); download LoRAs, "
                                      "ControlNets and VAEs as .safetensors files and add the file")
        done = install_hub(text, name, force=force)
        k, n, p = done.kind, done.name, done.path
    else:
        raise ModelNotFoundError(f"{text} is no file or folder here, and no Hugging Face Hub id (ORG/NAME)")
    if make_default:
        set_default_model(n)
    return Installed(kind=k, name=n, path=p, default=k == "checkpoint" and chosen_default() == n)


def install_hub(hub_id: str, name: str | None = None, *, force: bool = False) -> Installed:
    """Download a diffusers model from the Hugging Face Hub (safetensors only) and install it;
    the one-line hub failure when offline. Takes an id only: never a path on this machine."""
    if not _HUB_ID.match(hub_id):
        raise InvalidRequestError(f"{hub_id!r} is no Hugging Face Hub id (ORG/NAME)")
    from bildwerk.models.loader import download_hub_model

    fetched = download_hub_model(hub_id)
    m = install_model(fetched, name or hub_id.split("/", 1)[1], force=force)
    return Installed(kind="checkpoint", name=m.name, path=m.path, default=chosen_default() == m.name)


class Removed(BaseModel):
    kind: AssetKind
    name: str
    path: Path
    was_default: bool = False


def remove(name: str, kind: AssetKind | None = None) -> Removed:
    """Delete an installed model, LoRA, embedding, ControlNet or VAE from bildwerk's own folders.
    A registered source's files are never deleted; the embedded default cannot be removed."""
    from bildwerk.models.catalog import EMBEDDED, find_entries

    entries = find_entries(name, kind)
    if len(entries) > 1:
        kinds = ", ".join(e.kind for e in entries)
        raise InvalidRequestError(f"{name!r} names several things ({kinds}); say which with --kind KIND "
                                  "(?kind= over REST)")
    entry = entries[0]
    if entry.source == EMBEDDED:
        raise InvalidRequestError("the embedded default model ships with bildwerk and cannot be removed; "
                                  "`bildwerk models default NAME` chooses another default")
    if entry.source != "bildwerk":
        raise InvalidRequestError(
            f"{entry.name} is in the registered folder {entry.source}, whose files bildwerk never deletes; "
            f"delete it there, or stop listing that folder with `bildwerk models sources remove {entry.source}`")
    was_default = entry.kind == "checkpoint" and chosen_default() == entry.name
    _retire(entry.path, bildwerk_home() / HOME_FOLDERS[entry.kind] / _STAGING)
    if was_default:
        reset_default_model()
    return Removed(kind=entry.kind, name=entry.name, path=entry.path, was_default=was_default)
