"""The sd-webui-controlnet API that A1111 clients send: ``alwayson_scripts.controlnet.args`` on
txt2img/img2img, and ``/controlnet/model_list``, ``/module_list``, ``/detect``.

A unit is read leniently as the extension does (unknown fields ignored, old names such as
``input_image`` accepted) and becomes a request's control unit (core/control.py). Model names
as the extension lists them carry a hash suffix (``control_v11p_sd15_canny [d14c016b]``); it
is dropped before the name is looked up. Modules bildwerk cannot run offline are a clear 400.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ConfigDict, Field

from bildwerk.core.control import MAX_CONTROL_UNITS
from bildwerk.core.errors import InvalidRequestError
from bildwerk.images.control import preprocess
from bildwerk.images.io import encode_png
from bildwerk.server.app import state
from bildwerk.server.common import b64_image
from bildwerk.server.schemas import StrictBody

router = APIRouter(prefix="/controlnet", tags=["AUTOMATIC1111"])

# The extension's module names -> bildwerk's preprocessors.
MODULES: dict[str, str] = {
    "none": "none",
    "canny": "canny",
    "scribble": "scribble",
    "invert": "scribble",
    "invert (from white bg & black line)": "scribble",
    "lineart_standard (from white bg & black line)": "scribble",
    "lineart": "lineart",
    "scribble_xdog": "lineart",
}
_HASH = re.compile(r"\s*\[[0-9a-fA-F]{6,64}\]$")


def model_name(name: str) -> str:
    """``control_v11p_sd15_canny [d14c016b]`` -> ``control_v11p_sd15_canny``."""
    return _HASH.sub("", name.strip())


def _module(name: Any) -> str:
    key = str(name or "none").strip().lower()
    if key not in MODULES:
        raise InvalidRequestError(
            f"ControlNet module {str(name)[:80]!r} is not available in bildwerk (it needs no download only for: "
            f"{', '.join(MODULES)}); preprocess the picture elsewhere and send it with module \"none\"")
    return MODULES[key]


def _unit_image(arg: dict[str, Any]) -> str | None:
    image = arg.get("image", arg.get("input_image"))
    if isinstance(image, dict):  # {"image": b64, "mask": b64}, the extension's newer form
        image = image.get("image")
    return image if isinstance(image, str) and image else None


def _number(arg: dict[str, Any], key: str, default: float) -> float:
    value = arg.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"alwayson_scripts.controlnet: {key} must be a number")
    return float(value)


def control_units_from_scripts(st: Any, scripts: Any, fallback_image: str | None = None) -> list[dict[str, Any]] | None:
    """The request's control units from an A1111 body's ``alwayson_scripts`` (None: no ControlNet).
    An enabled unit without an image takes img2img's input picture, as the extension does."""
    if not isinstance(scripts, dict):
        return None
    cn = scripts.get("controlnet") or scripts.get("ControlNet")
    if not isinstance(cn, dict):
        return None
    args = cn.get("args")
    if not isinstance(args, list):
        raise InvalidRequestError("alwayson_scripts.controlnet.args must be a list of units")
    units = []
    for i, arg in enumerate(args):
        if not isinstance(arg, dict):
            raise InvalidRequestError(f"alwayson_scripts.controlnet.args[{i}] must be an object")
        if arg.get("enabled", True) is False or not arg.get("model") or arg.get("model") == "None":
            continue
        image = _unit_image(arg) or fallback_image
        if image is None:
            raise InvalidRequestError(f"ControlNet unit {i} has no image (send \"image\" as base64)")
        if len(units) == MAX_CONTROL_UNITS:
            raise InvalidRequestError(f"at most {MAX_CONTROL_UNITS} ControlNet units")
        module = _module(arg.get("module"))
        lo, hi = _number(arg, "threshold_a", 100), _number(arg, "threshold_b", 200)
        unit: dict[str, Any] = {
            "model": model_name(str(arg["model"])), "preprocessor": module,
            "scale": _number(arg, "weight", 1.0),
            "start": _number(arg, "guidance_start", 0.0), "end": _number(arg, "guidance_end", 1.0),
            "image": b64_image(st, image, f"ControlNet unit {i} image"),
        }
        if module in ("canny", "lineart"):
            unit.update(low_threshold=int(lo), high_threshold=int(hi))
        units.append(unit)
    return units or None


@router.get("/model_list")
def model_list(request: Request) -> dict:
    """The ControlNets bildwerk finds (its folder and registered A1111/ComfyUI folders)."""
    from bildwerk.models.assets import list_assets

    return {"model_list": [a.name for a in list_assets("controlnet")]}


@router.get("/module_list")
def module_list() -> dict:
    return {"module_list": list(MODULES)}


class DetectIn(StrictBody):
    model_config = ConfigDict(extra="allow", strict=True)

    controlnet_module: str = Field(default="none", max_length=200)
    controlnet_input_images: list[str] = Field(default_factory=list, max_length=8)
    controlnet_threshold_a: float | None = Field(default=None, ge=0, le=255)
    controlnet_threshold_b: float | None = Field(default=None, ge=0, le=255)


@router.post("/detect")
async def detect(body: DetectIn, request: Request) -> dict:
    """Run a preprocessor on pictures: the control maps a generation would use."""
    st = state(request)
    module = _module(body.controlnet_module)
    if not body.controlnet_input_images:
        raise InvalidRequestError("controlnet_input_images needs at least one picture (base64)")
    lo = int(body.controlnet_threshold_a if body.controlnet_threshold_a is not None else 100)
    hi = int(body.controlnet_threshold_b if body.controlnet_threshold_b is not None else 200)

    def run() -> list[str]:
        out = []
        for i, text in enumerate(body.controlnet_input_images):
            image = b64_image(st, text, f"controlnet_input_images[{i}]")
            if image is None:  # an empty string: no picture
                raise InvalidRequestError(f"controlnet_input_images[{i}] is empty; send a picture as base64")
            out.append(base64.b64encode(encode_png(preprocess(image, module, low=lo, high=hi))).decode())
        return out

    return {"images": await asyncio.to_thread(run), "info": "Success"}
