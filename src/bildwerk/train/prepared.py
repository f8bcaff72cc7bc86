"""Training data encoded once: VAE latents and caption vectors, kept on disk.

Before its first step a UNet run encodes every picture (and its mirror image) with the
VAE and every caption and word with the sentence encoder: three to four minutes for the default
dataset on two CPU cores. The run keeps the result in its folder (``prepared.safetensors``)
and a resumed run reads it back instead, when nothing it was made from has changed.

``bildwerk prepare`` writes the same file on its own. ``bildwerk train FILE`` trains from
it without the image folder and without loading the sentence encoder: that is how a run
moves to a machine that has a GPU but not the dataset or the encoder's package
(docs/training.md). ``compact`` stores latents as 8-bit codes and vectors as 8-bit with a
scale per row (a quarter of the size; latents to within 1/255 of their range) and keeps
only the latent means.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bildwerk.core.errors import InvalidRequestError

FORMAT = "bildwerk-prepared/1"
CACHE_NAME = "prepared.safetensors"
_LATENTS = ("mean", "std", "fmean", "fstd")


@dataclass
class PreparedData:
    latents: dict[str, torch.Tensor]  # mean, std [, fmean, fstd]: (N, C, h, w) float32, scaled
    flippable: torch.Tensor  # (N,) bool
    captions: list[dict[str, str]]  # per row: lang -> caption
    meta: dict[str, Any]  # what it was made from (see expected_meta)
    texts: dict[str, int] | None = None  # caption or word -> row of vectors (sentence encoder)
    vectors: np.ndarray | None = None  # (T, dim) float16
    file_names: list[str] = field(default_factory=list)
    _rows: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # caption -> vector ids per token

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def languages(self) -> list[str]:
        from bildwerk.train.imagefolder import caption_languages

        return caption_languages(self.captions)

    @property
    def has_flips(self) -> bool:
        return "fmean" in self.latents

    def tokens(self, encoder, captions: list[str]) -> torch.Tensor:
        """Conditioning for captions, from the stored vectors (the encoder's layout, not its model)."""
        assert self.texts is not None and self.vectors is not None
        rows = np.stack([self._row(encoder, c) for c in captions])
        return torch.from_numpy(self.vectors[rows].astype(np.float32))  # one gather for the batch

    def _row(self, encoder, caption: str) -> np.ndarray:
        """The vector index of each token of ``caption`` (worked out once per caption)."""
        row = self._rows.get(caption)
        if row is None:
            assert self.texts is not None
            ids = np.array([self.texts[t] for t in encoder.texts_for(caption)])
            row = self._rows[caption] = ids[encoder.layout_order(len(ids))]
        return row


def vae_fingerprint(vae) -> str:
    """A hash of the VAE's weights: latents from another VAE are another model's language."""
    h = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(repr(float(vae.config.scaling_factor)).encode())
    return h.hexdigest()[:16]


def folder_fingerprint(folder: Path) -> str:
    """metadata.csv and the size and time of every file it names: cheap, and changes with the data."""
    from bildwerk.train.imagefolder import read_metadata

    h = hashlib.sha256((folder / "metadata.csv").read_bytes())
    for row in read_metadata(folder):
        st = os.stat(folder / row["file_name"])
        h.update(f"{row['file_name']}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def expected_meta(cfg, vae, encoder) -> dict[str, Any]:
    """What a prepared file for this configuration must have been made from."""
    return {
        "format": FORMAT,
        "data": folder_fingerprint(cfg.data) if cfg.data.is_dir() else None,
        "resolution": cfg.resolution,
        "languages": list(cfg.languages) if cfg.languages else None,
        "vae": vae_fingerprint(vae),
        "encoder": encoder.config.__dict__ if encoder is not None else None,
    }


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, device: torch.device, flip: bool) -> dict[str, torch.Tensor]:
    """Latent mean and std of every image (and of its mirror), rounded to fp16 as stored."""
    from bildwerk.images.tensors import to_model_range

    scale = float(vae.config.scaling_factor)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in _LATENTS}
    for chunk in images.split(32):
        x = to_model_range(chunk).to(device, vae.dtype)
        views = [("mean", "std", x)] + ([("fmean", "fstd", x.flip(-1))] if flip else [])
        for m, s, view in views:
            d = vae.encode(view).latent_dist
            parts[m].append(d.mean.float().cpu() * scale)
            parts[s].append(d.std.float().cpu() * scale)
    # Rounded like the cache keeps them, so a run that reads the cache back sees what a run
    # that encoded saw.
    return {k: torch.cat(v).half().float() for k, v in parts.items() if v}


def prepare(cfg, vae, encoder, device: torch.device, meta: dict[str, Any] | None = None) -> PreparedData:
    """Load the image folder of ``cfg`` and encode it (``meta``: its expected_meta, if known)."""
    from bildwerk.train.imagefolder import load_imagefolder

    data = load_imagefolder(cfg.data, resolution=cfg.resolution, split="train", languages=cfg.languages)
    texts: dict[str, int] | None = None
    vectors = None
    if encoder is not None:
        texts = {}
        for caps in data.captions:
            for cap in caps.values():
                for t in encoder.texts_for(cap):
                    texts.setdefault(t, len(texts))
        vectors = encoder.embed_texts(list(texts)).astype(np.float16)  # dict keeps insertion order
    return PreparedData(latents=encode_latents(vae, data.images, device, cfg.flip), flippable=data.flippable,
                        captions=data.captions, meta=meta or expected_meta(cfg, vae, encoder), texts=texts,
                        vectors=vectors, file_names=data.file_names)


def _quantize(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """8-bit codes with a low and a step for each slice along ``dim``."""
    other = [d for d in range(x.dim()) if d != dim]
    lo = x.amin(dim=other, keepdim=True)
    step = (x.amax(dim=other, keepdim=True) - lo).clamp_min(1e-8) / 255
    return ((x - lo) / step).round().to(torch.uint8), lo.float(), step.float()


def save(prep: PreparedData, path: Path, *, compact: bool = False) -> Path:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {"flippable": prep.flippable.to(torch.uint8)}
    for name, t in prep.latents.items():
        if compact and name in ("std", "fstd"):
            continue  # a compact file trains on the means: the posterior std is ~1% of them
        if compact:
            q, lo, step = _quantize(t, dim=1)  # per latent channel
            tensors.update({f"{name}.q": q, f"{name}.lo": lo, f"{name}.step": step})
        else:
            tensors[name] = t.half()
    if prep.vectors is not None:
        v = torch.from_numpy(prep.vectors.astype(np.float32))
        if compact:
            scale = v.abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / 127
            tensors.update({"vectors.q": (v / scale).round().to(torch.int8), "vectors.scale": scale})
        else:
            tensors["vectors"] = v.half()
    header = {"meta": json.dumps(prep.meta), "captions": json.dumps(prep.captions, ensure_ascii=False),
              "texts": json.dumps(list(prep.texts) if prep.texts is not None else None, ensure_ascii=False),
              "file_names": json.dumps(prep.file_names, ensure_ascii=False), "compact": json.dumps(compact)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=header)
    tmp.replace(path)  # a run stopped while writing leaves no half file to be trusted later
    return path


def _open(path: Path, *, tensors: bool) -> tuple[dict[str, str], dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            found = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118
        meta = json.loads(header["meta"])
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same answer
        raise InvalidRequestError(f"{path}: not a prepared training file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise InvalidRequestError(f"{path}: prepared in format {meta.get('format')!r}, this bildwerk reads {FORMAT}")
    return header, meta, found


def read_meta(path: Path) -> dict[str, Any]:
    """What a prepared file was made from, without reading its tensors."""
    return _open(path, tensors=False)[1]


def load(path: Path) -> PreparedData:
    header, meta, tensors = _open(path, tensors=True)
    latents: dict[str, torch.Tensor] = {}
    for name in _LATENTS:
        if name in tensors:
            latents[name] = tensors[name].float()
        elif f"{name}.q" in tensors:
            latents[name] = tensors[f"{name}.q"].float() * tensors[f"{name}.step"] + tensors[f"{name}.lo"]
    for mean, std in (("mean", "std"), ("fmean", "fstd")):
        if mean in latents and std not in latents:
            latents[std] = torch.zeros_like(latents[mean])
    vectors = None
    if "vectors" in tensors:
        vectors = tensors["vectors"].numpy()
    elif "vectors.q" in tensors:
        vectors = (tensors["vectors.q"].float() * tensors["vectors.scale"]).half().numpy()
    texts = json.loads(header["texts"])
    return PreparedData(latents=latents, flippable=tensors["flippable"].bool(), captions=json.loads(header["captions"]),
                        meta=meta, texts={t: i for i, t in enumerate(texts)} if texts is not None else None,
                        vectors=vectors, file_names=json.loads(header.get("file_names", "[]")))


def is_prepared_file(path: Path) -> bool:
    return path.is_file() and path.suffix == ".safetensors"


def training_data(cfg, vae, encoder, device: torch.device, run_folder: Path) -> tuple[PreparedData, str]:
    """The run's data and where it came from: a prepared file, the run's cache, or encoded now."""
    if is_prepared_file(cfg.data):
        prep = load(cfg.data)
        _check_file(prep, cfg, vae, encoder)
        if cfg.languages:
            from bildwerk.train.imagefolder import select_languages

            prep.captions = [select_languages(c, cfg.languages) for c in prep.captions]
        return prep, f"prepared file {cfg.data}"
    cache = run_folder / CACHE_NAME
    want = expected_meta(cfg, vae, encoder)
    if cache.is_file():
        try:
            prep = load(cache)
        except InvalidRequestError:
            prep = None
        if prep is not None and prep.meta == want and (prep.has_flips or not cfg.flip):
            return prep, f"cache {cache}"
    prep = prepare(cfg, vae, encoder, device, want)
    save(prep, cache)
    return prep, "encoded now"


def _check_file(prep: PreparedData, cfg, vae, encoder) -> None:
    """A prepared file must match the model being trained: same VAE, encoder and size."""
    meta = prep.meta
    problems = []
    if meta["vae"] != vae_fingerprint(vae):
        problems.append("it was encoded with another VAE")
    want_enc = encoder.config.__dict__ if encoder is not None else None
    if meta["encoder"] != want_enc:
        problems.append(f"its captions were embedded for {meta['encoder']}, this model needs {want_enc}")
    if meta["resolution"] != cfg.resolution:
        problems.append(f"it holds {meta['resolution']} px pictures, not {cfg.resolution} px")
    if cfg.flip and not prep.has_flips:
        problems.append("it has no mirrored latents (prepare it with flips, or train with flip off)")
    if problems:
        raise InvalidRequestError(f"{cfg.data} cannot train this model: " + "; ".join(problems))
