"""Single-file checkpoints (SD 1.x, SD 2.x, SDXL and their inpainting variants), loaded in place.

A checkpoint from a model site is one ``.safetensors`` in the original layout. diffusers'
``from_single_file`` converts it while loading, but it needs the architecture's configs (and
the CLIP tokenizers), which it would fetch from the Hugging Face Hub. bildwerk never lets it:
the configs are looked up on this machine, in this order, and the loader gets a folder:

1. ``NAME.bildwerk.json`` next to the file, ``{"config": "FOLDER"}`` (a diffusers folder of
   the same architecture; only its configs are read);
2. ``$BILDWERK_HOME/configs/<type>/`` (``sd1``, ``sd1-inpaint``, ``sd2``, ``sd2-inpaint``,
   ``sdxl``, ``sdxl-inpaint``), filled once by ``bildwerk models configs`` where there is
   internet, or by copying any diffusers model folder of that type there;
3. the Hugging Face cache, when diffusers already fetched that type's configs on this machine.

Otherwise the load fails with one line that says which of these to do. The architecture comes
from the weights (``models/inspect.py``, with diffusers' own rules).

The prediction type cannot always be read from the weights: SD 2.x comes as 512-px epsilon
("base") and 768-px v-prediction models with identical shapes. bildwerk follows diffusers
(SD 2.x non-inpainting: v-prediction; everything else: epsilon, unless the file carries the
``v_pred`` marker) and lets a file say otherwise: ``prediction_type`` in ``NAME.bildwerk.json``,
or AUTOMATIC1111's ``NAME.yaml`` beside it (``parameterization: "v"`` means v-prediction).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bildwerk.core.errors import NotConfiguredError, UnsupportedModelError
from bildwerk.core.paths import bildwerk_home
from bildwerk.models.inspect import FileInfo, inspect_file

CONFIGS_FOLDER = "configs"
SIDECAR_SUFFIX = ".bildwerk.json"
# Configuration files of a diffusers folder (configs, tokenizer vocabularies), never weights.
CONFIG_PATTERNS = ["*.json", "*.txt"]

# bildwerk's config type -> the hub repository diffusers itself takes that type's configs from.
HUB_CONFIGS: dict[str, str] = {
    "sd1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd1-inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "sd2": "stabilityai/stable-diffusion-2-1",
    "sd2-inpaint": "stabilityai/stable-diffusion-2-inpainting",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sdxl-inpaint": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
}
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
PREDICTION_TYPES = {"epsilon": "epsilon", "eps": "epsilon", "v_prediction": "v_prediction", "v": "v_prediction"}
_KIND_WORDS = {"lora": "a LoRA", "embedding": "a textual-inversion embedding", "controlnet": "a ControlNet",
               "vae": "a VAE"}


@dataclass(frozen=True)
class Checkpoint:
    """A single-file checkpoint bildwerk can load, and how."""

    path: Path
    info: FileInfo
    config_type: str  # a key of HUB_CONFIGS

    @property
    def family(self) -> str:
        return str(self.info.family)

    @property
    def inpaint(self) -> bool:
        return self.info.variant == "inpaint"

    @property
    def label(self) -> str:
        return FAMILY_LABELS[self.family] + (" inpainting" if self.inpaint else "")


def configs_dir() -> Path:
    return bildwerk_home() / CONFIGS_FOLDER


def check_checkpoint(path: Path) -> Checkpoint:
    """``path`` as a checkpoint bildwerk drives, or one clear line why not (read from the header)."""
    info = inspect_file(path)
    name = path.name
    if info.kind is None:
        raise UnsupportedModelError(
            f"{name} is no model checkpoint bildwerk knows (its tensors match no SD 1.x/2.x/SDXL layout); "
            "--model takes a full checkpoint or a diffusers folder")
    if info.kind != "checkpoint":
        raise UnsupportedModelError(
            f"{name} is {_KIND_WORDS[info.kind]}, not a model checkpoint; --model takes a full SD 1.x/2.x/SDXL "
            "checkpoint or a diffusers folder")
    if info.variant == "refiner":
        raise UnsupportedModelError(
            f"{name} is an SDXL refiner, which only refines another model's pictures; use an SDXL base checkpoint")
    if info.family not in FAMILY_LABELS:
        arch = info.details.get("unsupported") or "unknown"
        raise UnsupportedModelError(
            f"{name} is a checkpoint of an architecture bildwerk does not drive ({arch}); "
            "bildwerk loads SD 1.x, SD 2.x and SDXL checkpoints")
    missing = [part for part, key in (("VAE", "has_vae"), ("text encoder", "has_text_encoder"))
               if not info.details.get(key)]
    if missing:
        raise UnsupportedModelError(
            f"{name} holds only a UNet (no {' and no '.join(missing)}); bildwerk loads full checkpoints")
    config_type = info.family + ("-inpaint" if info.variant == "inpaint" else "")
    return Checkpoint(Path(path), info, config_type)


def sidecar(path: Path) -> dict[str, Any]:
    """``NAME.bildwerk.json`` beside a checkpoint (a broken one is an error, a missing one {})."""
    f = path.with_name(path.stem + SIDECAR_SUFFIX)
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"{f.name} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(data, dict):
        raise UnsupportedModelError(f"{f.name} must hold a JSON object such as {{\"prediction_type\": \"epsilon\"}}")
    return data


def settings_stamp(path: Path) -> str:
    """Changes when a checkpoint's settings files beside it change (so a kept model is reloaded)."""
    stamps = []
    for f in (path.with_name(path.stem + SIDECAR_SUFFIX), path.with_suffix(".yaml")):
        try:
            stamps.append(str(f.stat().st_mtime_ns))
        except OSError:
            stamps.append("-")
    return "|" + "|".join(stamps)


def _a1111_parameterization(path: Path) -> str | None:
    """The prediction type an A1111 ``NAME.yaml`` (an original LDM config) gives, if there is one."""
    f = path.with_suffix(".yaml")
    if not f.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(f.read_text("utf-8"))
        params = data["model"]["params"]
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
        raise UnsupportedModelError(f"{f.name} is not an original model config (model.params); fix or delete it") \
            from None
    return "v_prediction" if isinstance(params, dict) and params.get("parameterization") == "v" else "epsilon"


def prediction_type(ckpt: Checkpoint) -> tuple[str, str]:
    """(prediction type, where it came from) for a checkpoint."""
    chosen = sidecar(ckpt.path).get("prediction_type")
    if chosen is not None:
        if chosen not in PREDICTION_TYPES:
            raise UnsupportedModelError(
                f"{ckpt.path.stem}{SIDECAR_SUFFIX}: prediction_type must be \"epsilon\" or \"v_prediction\" "
                f"(got {chosen!r})")
        return PREDICTION_TYPES[chosen], SIDECAR_SUFFIX
    from_yaml = _a1111_parameterization(ckpt.path)
    if from_yaml is not None:
        return from_yaml, ".yaml"
    if ckpt.info.details.get("prediction_type"):
        return str(ckpt.info.details["prediction_type"]), "weights"
    if ckpt.family == "sd2" and not ckpt.inpaint:
        return "v_prediction", "default"  # diffusers' choice for SD 2.x: the 768-v models
    return "epsilon", "default"


def native_size(ckpt: Checkpoint, prediction: str) -> int:
    """The size a checkpoint's family works at, without loading it."""
    if ckpt.family == "sdxl":
        return 1024
    if ckpt.family == "sd2" and prediction == "v_prediction":
        return 768
    return 512


def _is_config_folder(folder: Path) -> bool:
    return (folder / "model_index.json").is_file()


def find_configs(ckpt: Checkpoint) -> Path:
    """The folder of diffusers configs to build ``ckpt``'s pipeline from, found on this machine."""
    given = sidecar(ckpt.path).get("config")
    if given is not None:
        folder = (ckpt.path.parent / str(given)).expanduser()
        if not _is_config_folder(folder):
            raise NotConfiguredError(
                f"{ckpt.path.stem}{SIDECAR_SUFFIX} names config {given!r}, which is no diffusers model folder "
                "(no model_index.json)")
        return folder
    mine = configs_dir() / ckpt.config_type
    if _is_config_folder(mine):
        return mine
    cached = _hub_cache(HUB_CONFIGS[ckpt.config_type])
    if cached is not None:
        return cached
    raise NotConfiguredError(
        f"{ckpt.path.name} is an {ckpt.label} checkpoint, and the {ckpt.label} configs it needs are not on this "
        f"machine: run `bildwerk models configs {ckpt.config_type}` once with internet, or offline "
        f"`bildwerk models configs {ckpt.config_type} --from FOLDER` with a diffusers {ckpt.label} model folder "
        "(its configs suffice)")


def _hub_cache(repo: str) -> Path | None:
    """The configs of ``repo`` when the Hugging Face cache already has them (never downloads)."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo, allow_patterns=CONFIG_PATTERNS, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or no cache at all): the next option
        return None
    return folder if _is_config_folder(folder) else None


def fetch_configs(types: list[str] | None = None) -> dict[str, Path]:
    """Download each type's configs and tokenizers (no weights, about 3 MB each) into
    ``$BILDWERK_HOME/configs/<type>``; needs internet once, then single files load offline."""
    from huggingface_hub import constants, snapshot_download

    wanted = types or list(HUB_CONFIGS)
    unknown = [t for t in wanted if t not in HUB_CONFIGS]
    if unknown:
        raise NotConfiguredError(f"unknown config type {unknown[0]!r}; use one of {', '.join(HUB_CONFIGS)}")
    done: dict[str, Path] = {}
    for kind in wanted:
        dest = configs_dir() / kind
        try:
            snapshot_download(HUB_CONFIGS[kind], allow_patterns=CONFIG_PATTERNS, local_dir=dest)
        except Exception as exc:  # noqa: BLE001 - transport, offline, gated: one message
            reason = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
                      else (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160])
            raise NotConfiguredError(
                f"could not fetch the {kind} configs from the Hugging Face Hub ({reason}); run "
                "`bildwerk models configs` where there is internet and copy the configs folder "
                f"here, or copy a diffusers model folder of that type to {dest}") from exc
        done[kind] = dest
    return done


def copy_configs(folder: Path, dest: Path) -> Path:
    """The configuration files (no weights) of a diffusers folder, copied to ``dest``."""
    folder = Path(folder)
    for pattern in CONFIG_PATTERNS:
        for f in folder.rglob(pattern):
            target = dest / f.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
    return dest


def configs_from_folder(kind: str, folder: Path) -> Path:
    """Take ``kind``'s configs from a diffusers model folder on this machine (no internet)."""
    if kind not in HUB_CONFIGS:
        raise NotConfiguredError(f"unknown config type {kind!r}; use one of {', '.join(HUB_CONFIGS)}")
    if not _is_config_folder(Path(folder)):
        raise NotConfiguredError(f"{folder} is no diffusers model folder (no model_index.json)")
    return copy_configs(Path(folder), configs_dir() / kind)


def _pipeline_class(ckpt: Checkpoint):
    import diffusers

    if ckpt.family == "sdxl":
        # The engine drives the components itself (a 9-channel UNet included) and calls the
        # base pipeline's helpers; SDXL's inpaint pipeline changes their signatures.
        return diffusers.StableDiffusionXLPipeline
    return diffusers.StableDiffusionInpaintPipeline if ckpt.inpaint else diffusers.StableDiffusionPipeline


def load_pipeline(ckpt: Checkpoint, dtype: Any) -> tuple[Any, dict[str, Any]]:
    """Build the pipeline of a single file offline; (pipe, what the record says about it)."""
    configs = find_configs(ckpt)
    prediction, told_by = prediction_type(ckpt)
    cls = _pipeline_class(ckpt)
    kwargs: dict[str, Any] = {"config": str(configs), "local_files_only": True, "dtype": dtype}
    if ckpt.family != "sdxl":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        pipe = cls.from_single_file(str(ckpt.path), **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UnsupportedModelError(
            f"could not load {ckpt.path.name} as an {ckpt.label} checkpoint with the configs in {configs} "
            f"({first})") from exc
    if pipe.scheduler.config.get("prediction_type") != prediction:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=prediction)
    facts = {"file": ckpt.path.name, "family": ckpt.family, "variant": ckpt.info.variant,
             "prediction_type": prediction, "prediction_from": told_by, "configs": ckpt.config_type}
    return pipe, facts
