"""Install a trained model (or any diffusers folder) under a name, and list what is installed.

Installed models live in the models folder (``$BILDWERK_HOME/models/NAME``), where the command
line, Python and the server already find them by name (``--model NAME``,
``models.loader.resolve_model``). ``bildwerk models`` is one face of this module; a REST face
can call the same functions. A folder is checked before it is copied: a diffusers folder of
safetensors weights (``models.safety``) with a text side bildwerk drives. The copy is made
beside the models and swapped in by renames, so a listing never sees half a model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydantic import BaseModel

from bildwerk.core.errors import (
    InvalidRequestError,
    ModelExistsError,
    ModelNotFoundError,
    UnsupportedModelError,
)
from bildwerk.core.paths import bildwerk_home
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
from bildwerk.models.safety import check_model_folder, model_components

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
    """Make the installed model ``name`` what "default" means (BILDWERK_MODEL still wins)."""
    if not (models_dir() / name / "model_index.json").is_file():
        raise ModelNotFoundError(f"no model {name!r} in {models_dir()}; `bildwerk models list` shows them")
    home = bildwerk_home()
    home.mkdir(parents=True, exist_ok=True)
    (home / DEFAULT_CHOICE_FILE).write_text(name + "\n", "utf-8")
