"""The offline describer: efficientnet-lite0's ImageNet classes, in plain English."""

from __future__ import annotations

import re
import threading
from typing import Any

from bildwerk.core.errors import InvalidRequestError, PromptBackendError
from bildwerk.prompts.describe.base import Description, ImageInput, _as_image


def _readable_name(synonyms: tuple[str, ...]) -> str:
    """A class's everyday name: the first synonym, or a longer one that contains it.

    "tabby, tabby cat" -> "tabby cat", "puck, hockey puck" -> "hockey puck"; Latin
    names ("Tinca tinca") never contain the first synonym, so they are never picked.
    """
    first = synonyms[0]
    pattern = re.compile(rf"(^|\s){re.escape(first)}(\s|$)", re.IGNORECASE)
    for other in synonyms[1:]:
        if other.lower() != first.lower() and pattern.search(other) and len(other.split()) <= 3:
            return other
    return first


# ImageNet class names that are plural nouns: no article in front of them.
_PLURAL_NAMES = frozenset({
    "binoculars", "parallel bars", "sunglasses", "swimming trunks", "Great Pyrenees",
})
_AN_EXCEPTIONS = re.compile(r"^(hour|honest|honou?r|heir)", re.IGNORECASE)
_A_EXCEPTIONS = re.compile(r"^(uni|use|usu|eu|one|ewe)", re.IGNORECASE)


def _with_article(name: str) -> str:
    if name in _PLURAL_NAMES:
        return name
    vowel = name[:1].lower() in "aeiou"
    if _AN_EXCEPTIONS.match(name):
        vowel = True
    elif _A_EXCEPTIONS.match(name):
        vowel = False
    return f"{'an' if vowel else 'a'} {name}"


class LocalDescriber:
    """Offline "description": the ImageNet classes efficientnet-lite0 sees, in plain English.

    Be clear about what this is: the judge is a 1000-class ImageNet *object classifier*.
    The text names the most likely of those classes ("a tabby cat"), with alternates when
    the top probability is below :attr:`CONFIDENT` ("a picture of a ping-pong ball or a
    face powder"). It cannot see scenes, settings, styles, colours, text, counts or
    relations between things, and anything outside ImageNet's classes (people, most
    drawings, abstract shapes) is named as the nearest class it knows, which can be
    plainly wrong. ``confidence`` is the top class's softmax probability; ``labels`` are
    the ``top`` classes with their probabilities, most likely first. Use
    :class:`OpenAIVisionDescriber` or :class:`AzureDescriber` for real captions.
    """

    name = "local"
    CONFIDENT = 0.5  # below this the text hedges and lists alternates
    # An alternate is named when it has at least 5 % or half the top class's probability
    # (when everything is unlikely, the near-ties are still worth saying).
    ALTERNATE_MIN = 0.05

    def __init__(self, judge: Any | None = None, top: int = 3) -> None:
        if top < 1:
            raise InvalidRequestError(f"top must be at least 1, got {top}")
        self.top = top
        self._judge = judge
        self._lock = threading.Lock()

    @property
    def judge(self) -> Any:
        # Lazy: loading torch and the weights costs time that a remote describer never needs.
        with self._lock:
            if self._judge is None:
                from bildwerk.models.imagenet.classifier import Judge, JudgeUnavailable

                try:
                    self._judge = Judge()
                except JudgeUnavailable as exc:
                    raise PromptBackendError(f"the local describer is unavailable: {exc}") from exc
            return self._judge

    def describe(self, image: ImageInput) -> Description:
        from bildwerk.models.imagenet.labels import class_synonyms

        picture = _as_image(image)
        logits = self.judge.logits([picture])
        probs = logits[0].float().softmax(dim=0)
        values, indices = probs.topk(min(self.top, probs.numel()))
        synonyms = class_synonyms()
        labels = [
            (_readable_name(synonyms[int(i)]), float(v))
            for v, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
        return Description(
            text=self._text(labels),
            backend=f"local:{getattr(self.judge, 'name', 'judge')}",
            confidence=labels[0][1],
            labels=labels,
        )

    def _text(self, labels: list[tuple[str, float]]) -> str:
        best, p = labels[0]
        if p >= self.CONFIDENT:
            return _with_article(best)
        names = [best]
        for name, q in labels[1:]:
            if q >= min(self.ALTERNATE_MIN, p / 2) and name not in names:
                names.append(name)
        phrases = [_with_article(n) for n in names]
        listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1]
        return f"a picture of {listed}"
