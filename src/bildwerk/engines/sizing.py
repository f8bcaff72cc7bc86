"""Output sizes every engine agrees on (torch-free, so remote engines can share them)."""

from __future__ import annotations

from PIL import Image

from bildwerk.core.request import MAX_SIDE, MIN_SIDE, GenerationRequest, Mode


def fit_size(
    width: int, height: int, *, max_side: int = MAX_SIDE, multiple: int = 8
) -> tuple[int, int]:
    """The working size for an input image: within bounds, aspect kept, a multiple of 8."""
    scale = min(1.0, max_side / max(width, height))
    if min(width, height) * scale < MIN_SIDE:
        scale = max(scale, MIN_SIDE / min(width, height))
    w = max(MIN_SIDE, int(width * scale) // multiple * multiple)
    h = max(MIN_SIDE, int(height * scale) // multiple * multiple)
    return min(w, max_side), min(h, max_side)


def model_size(width: int, height: int, native: int, *, multiple: int = 8) -> tuple[int, int]:
    """The size a picture of ``width`` x ``height`` is worked on by a model whose own side is
    ``native``: about the model's area (native x native), the picture's aspect, multiples of
    ``multiple``, within the request bounds (the shorter side at least MIN_SIDE)."""
    scale = native / (width * height) ** 0.5
    scale = max(scale, MIN_SIDE / min(width, height))
    scale = min(scale, MAX_SIDE / max(width, height))
    w = max(MIN_SIDE, round(width * scale / multiple) * multiple)
    h = max(MIN_SIDE, round(height * scale / multiple) * multiple)
    return min(w, MAX_SIDE), min(h, MAX_SIDE)


def input_size(req: GenerationRequest, image: Image.Image) -> tuple[int, int]:
    """The requested width/height where given, else the input image's own size, fitted."""
    fit_w, fit_h = fit_size(*image.size)
    return req.width or fit_w, req.height or fit_h


def work_size(req: GenerationRequest, native: int) -> tuple[int, int]:
    """The size the local engine denoises at for a model whose own side is ``native``: the
    size asked for, else the model's own (text-to-image; the crop around an inpainting mask),
    else, for a whole input picture, the model's resolution at the picture's aspect (a 64 px
    model given a 512 px picture at 512 makes noise)."""
    if req.mode is Mode.TEXT_TO_IMAGE or (req.mode is Mode.INPAINT and req.only_masked):
        return req.width or native, req.height or native
    assert req.image is not None
    if req.width is None and req.height is None:
        return model_size(*req.image.size, native)
    return input_size(req, req.image)


def size_warnings(req: GenerationRequest, native: int) -> list[str]:
    """What to tell the user before a long run about the size ``req`` is worked at: that a
    whole picture is worked at the model's resolution, not its own; that a size asked for is
    far (over 2x, under 1/2) from the model's side, where models make noise."""
    w, h = work_size(req, native)
    out = []
    picture = req.image.size if req.image is not None else None
    whole = req.mode is Mode.IMAGE_TO_IMAGE or (req.mode is Mode.INPAINT and not req.only_masked)
    if whole and req.width is None and req.height is None and picture is not None and picture != (w, h):
        out.append(f"{req.mode.value} works at {w}x{h}, the model's own resolution ({native} px), not at "
                   f"the picture's {picture[0]}x{picture[1]}"
                   + (": the result is pasted back at the picture's size" if req.mode is Mode.INPAINT
                      else f": the result is {w}x{h}")
                   + "; set width and height to work at another size")
    elif max(w, h) > 2 * native or min(w, h) * 2 < native:
        out.append(f"{w}x{h} is far from the model's own resolution ({native} px, trained at "
                   f"{native}x{native}): expect noise or repeated shapes (and a longer run); "
                   f"about {native}x{native} suits it")
    return out
