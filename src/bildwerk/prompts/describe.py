"""Describing an input image in words, and merging that description with an edit.

The design team's flow: an image plus an edit prompt ("make it a watercolor", "put the
cat on a beach") -> a description of the image -> one generation prompt that applies
the edit -> variations. This module covers the first two steps.

Three describers share one small interface, :class:`Describer`:

* :class:`LocalDescriber` (the default): offline, the efficientnet-lite0 ImageNet judge
  names the most likely of 1000 object classes. Cheap and private, but it sees objects
  only (no scene, style, colour, text, count or relation).
* :class:`OpenAIVisionDescriber`: a vision chat model (OpenAI or any compatible server)
  through the official ``openai`` SDK; writes a real sentence.
* :class:`AzureDescriber`: Azure Computer Vision v3.2 "describe", what the original
  project used.

:func:`describer` picks one from a spec string. :func:`merge_description` merges a
description and an edit by rule (deterministic, no model); :func:`merge_with_llm` asks a
chat model instead.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from bildwerk.errors import (
    BildwerkError,
    InvalidImageError,
    InvalidRequestError,
    PromptBackendError,
)
from bildwerk.images.io import decode_image, encode_png, to_rgb
from bildwerk.openai_errors import explain, one_line, redact, retry_after_seconds

ImageInput = Image.Image | bytes

DEFAULT_VISION_MODEL = "gpt-4o-mini"
DESCRIBE_INSTRUCTION = (
    "Describe this image in one sentence for an image generator: subject, setting, style."
)
# Captioning gains nothing from more pixels than this, and uploads stay small.
MAX_SIDE = 1024
DESCRIBER_CHOICES = ("local", "openai", "openai:MODEL", "azure")


@dataclass
class Description:
    """What a describer saw: a caption plus, where the backend gives them, scored labels."""

    text: str
    backend: str
    confidence: float | None
    labels: list[tuple[str, float]] = field(default_factory=list)


@runtime_checkable
class Describer(Protocol):
    """Turns one image into a :class:`Description`."""

    name: str

    def describe(self, image: ImageInput) -> Description:
        """Describe a decoded image (or the raw bytes of a PNG/JPEG/WebP file)."""
        ...


# --------------------------------------------------------------------------- helpers


def _as_image(image: ImageInput | bytearray | memoryview) -> Image.Image:
    """A PIL image from an image or untrusted bytes (decoded within bildwerk's limits)."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, bytes | bytearray | memoryview):
        return decode_image(bytes(image))
    raise InvalidImageError(f"expected a PIL image or image bytes, got {type(image).__name__}")


def _fit(image: Image.Image, max_side: int = MAX_SIDE, min_side: int = 1) -> Image.Image:
    """RGB on white, downscaled so the long side is <= max_side, upscaled to min_side."""
    rgb = to_rgb(image)
    w, h = rgb.size
    scale = 1.0
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
    elif min(w, h) < min_side:
        scale = min_side / min(w, h)
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return rgb


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int = 300) -> str:
    return one_line(text, limit)


def _redact(text: str, secret: str | None) -> str:
    return redact(text, [secret])


# --------------------------------------------------------------------------- local


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
                from bildwerk.evaluation.judge import Judge, JudgeUnavailable

                try:
                    self._judge = Judge()
                except JudgeUnavailable as exc:
                    raise PromptBackendError(f"the local describer is unavailable: {exc}") from exc
            return self._judge

    def describe(self, image: ImageInput) -> Description:
        from bildwerk.evaluation.imagenet_map import class_synonyms

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


# --------------------------------------------------------------------------- OpenAI


class OpenAIVisionDescriber:
    """A one-sentence caption from a vision chat model through the official ``openai`` SDK.

    Settings not given come from the environment: ``BILDWERK_VISION_MODEL`` (default
    ``gpt-4o-mini``), ``BILDWERK_LLM_BASE_URL`` (default: api.openai.com) and the key
    from ``BILDWERK_LLM_API_KEY``, then ``OPENAI_API_KEY``. A base URL without a key is
    fine (local OpenAI-compatible servers). The image goes as a PNG data URL, long side
    at most :data:`MAX_SIDE` pixels, transparency flattened onto white.
    """

    def __init__(self, model: str | None = None, base_url: str | None = None,
                 api_key: str | None = None, timeout: float = 60, max_retries: int = 2) -> None:
        self.model = model or os.environ.get("BILDWERK_VISION_MODEL") or DEFAULT_VISION_MODEL
        base_url = base_url or os.environ.get("BILDWERK_LLM_BASE_URL") or None
        key = api_key or os.environ.get("BILDWERK_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if not key and not base_url:
            raise PromptBackendError(
                "the OpenAI describer needs an API key: set BILDWERK_LLM_API_KEY or "
                "OPENAI_API_KEY, or point BILDWERK_LLM_BASE_URL at an OpenAI-compatible server"
            )
        import openai

        self._key = key
        # Local servers ignore the key, but the SDK refuses to build a client without one.
        self._client = openai.OpenAI(api_key=key or "not-needed", base_url=base_url,
                                     timeout=timeout, max_retries=max_retries)
        self.endpoint = str(self._client.base_url).rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.name = f"openai:{self.model}"

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIVisionDescriber(model={self.model!r}, endpoint={self.endpoint!r})"

    def describe(self, image: ImageInput) -> Description:
        import openai

        png = encode_png(_fit(_as_image(image)))
        url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        messages: Any = [{
            "role": "user",
            "content": [
                {"type": "text", "text": DESCRIBE_INSTRUCTION},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }]
        where = f"{self.endpoint} (model {self.model})"
        try:
            reply = self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=150, temperature=0.2
            )
        except openai.OpenAIError as exc:
            failure = explain(exc, where=f"the vision model at {where}", secrets=[self._key],
                              timeout=self.timeout, retries=self.max_retries,
                              key_hint="BILDWERK_LLM_API_KEY or OPENAI_API_KEY")
            raise PromptBackendError(failure.message) from exc
        choices = getattr(reply, "choices", None) or []
        content = choices[0].message.content if choices and choices[0].message else None
        text = _clean_line(content or "")
        if not text:
            raise PromptBackendError(f"the vision model at {where} answered with an empty caption")
        return Description(text=text, backend=self.name, confidence=None, labels=[])



# --------------------------------------------------------------------------- Azure


class AzureDescriber:
    """Azure Computer Vision v3.2 "describe": a caption with confidence, plus tags.

    ``POST {endpoint}/vision/v3.2/describe`` with the image bytes (PNG, or JPEG when a
    PNG would pass Azure's 4 MB limit; long side at most :data:`MAX_SIDE`, short side at
    least 50 px as Azure requires). Settings not given come from ``AZURE_VISION_ENDPOINT``
    and ``AZURE_VISION_KEY``. A 429 is retried up to ``max_retries`` times after its
    Retry-After (capped at ``max_retry_wait`` seconds). Without captions the tags are
    used ("a picture with: grass, outdoor"). Describe's tags carry no scores, so each
    label gets 1.0 (present), in Azure's order.
    """

    name = "azure"
    API_PATH = "/vision/v3.2/describe"
    MAX_BYTES = 4 * 1024 * 1024
    MIN_SIDE = 50

    def __init__(self, endpoint: str | None = None, key: str | None = None, timeout: float = 30,
                 max_candidates: int = 1, language: str = "en", *, max_retries: int = 2,
                 max_retry_wait: float = 10.0) -> None:
        endpoint = endpoint or os.environ.get("AZURE_VISION_ENDPOINT")
        key = key or os.environ.get("AZURE_VISION_KEY")
        missing = [n for n, v in (("AZURE_VISION_ENDPOINT", endpoint), ("AZURE_VISION_KEY", key))
                   if not v]
        if missing:
            raise PromptBackendError(
                f"the Azure describer needs {' and '.join(missing)} (the Computer Vision "
                "resource's endpoint and key)"
            )
        assert endpoint is not None and key is not None
        if max_candidates < 1:
            raise InvalidRequestError(f"max_candidates must be at least 1, got {max_candidates}")
        self.endpoint = endpoint.rstrip("/")
        self._key = key
        self.timeout = timeout
        self.max_candidates = max_candidates
        self.language = language
        self.max_retries = max(0, max_retries)
        self.max_retry_wait = max(0.0, max_retry_wait)

    def __repr__(self) -> str:  # never shows the key
        return f"AzureDescriber(endpoint={self.endpoint!r})"

    @property
    def url(self) -> str:
        query = urllib.parse.urlencode(
            {"maxCandidates": self.max_candidates, "language": self.language}
        )
        return f"{self.endpoint}{self.API_PATH}?{query}"

    def _body(self, image: Image.Image) -> bytes:
        picture = _fit(image, MAX_SIDE, self.MIN_SIDE)
        data = encode_png(picture)
        if len(data) > self.MAX_BYTES:  # photos with noise compress badly as PNG
            buf = BytesIO()
            picture.save(buf, format="JPEG", quality=90)
            data = buf.getvalue()
        return data

    def describe(self, image: ImageInput) -> Description:
        body = self._body(_as_image(image))
        headers = {
            "Ocp-Apim-Subscription-Key": self._key,
            "Content-Type": "application/octet-stream",
            "Accept": "application/json",
        }
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
                break
            except urllib.error.HTTPError as exc:
                error_body = _read_quietly(exc)
                if exc.code == 429 and attempt < self.max_retries:
                    time.sleep(self._retry_wait(exc.headers.get("Retry-After"), attempt))
                    continue
                raise self._status_error(exc.code, error_body) from exc
            except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                raise self._transport_error(exc) from exc
        return self._parse(payload)

    def _retry_wait(self, header: str | None, attempt: int) -> float:
        wait = retry_after_seconds({"retry-after": header} if header else None)
        if wait is None:
            wait = 2.0**attempt  # no usable hint: back off 1, 2, 4... s
        return min(max(wait, 0.0), self.max_retry_wait)

    def _status_error(self, status: int, body: bytes) -> PromptBackendError:
        where = f"Azure Computer Vision at {self.endpoint}"
        code, message = _azure_error(body)
        detail = f" ({_redact(f'{code}: {message}', self._key)})" if code or message else ""
        if status == 403 and "quota" in message.lower():  # the free tier's monthly cap
            return PromptBackendError(f"{where} refused the request: quota exhausted{detail}")
        if status in (401, 403):
            return PromptBackendError(
                f"{where} rejected the key (HTTP {status}){detail}; check AZURE_VISION_KEY "
                "and that AZURE_VISION_ENDPOINT is the same resource's endpoint"
            )
        if status == 429:
            return PromptBackendError(
                f"{where} is rate limiting requests (HTTP 429) after {self.max_retries} "
                f"retries{detail}; try again later or raise the resource's tier"
            )
        return PromptBackendError(f"{where} failed with HTTP {status}{detail}")

    def _transport_error(self, exc: BaseException) -> PromptBackendError:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        where = f"Azure Computer Vision at {self.endpoint}"
        if isinstance(reason, TimeoutError) or "timed out" in str(reason).lower():
            return PromptBackendError(f"{where} timed out: no answer within {self.timeout:g} s")
        return PromptBackendError(f"{where} could not be reached: {_clip(str(reason))}")

    def _parse(self, payload: bytes) -> Description:
        where = f"Azure Computer Vision at {self.endpoint}"
        try:
            data = json.loads(payload)
            described = data.get("description") or {}
            captions = [c for c in described.get("captions") or []
                        if isinstance(c, dict) and str(c.get("text") or "").strip()]
            raw_tags = described.get("tags") or []
        except (ValueError, AttributeError) as exc:
            raise PromptBackendError(f"{where} answered with unreadable JSON") from exc
        labels: list[tuple[str, float]] = []
        for tag in raw_tags:
            if isinstance(tag, str) and tag.strip():
                labels.append((tag.strip(), 1.0))
            elif isinstance(tag, dict) and tag.get("name"):  # /analyze-style {"name", "confidence"}
                labels.append((str(tag["name"]), float(tag.get("confidence", 1.0))))
        if captions:
            best = max(captions, key=lambda c: float(c.get("confidence") or 0.0))
            confidence = best.get("confidence")
            return Description(
                text=_one_line(str(best["text"])),
                backend=self.name,
                confidence=float(confidence) if confidence is not None else None,
                labels=labels,
            )
        if labels:
            names = ", ".join(name for name, _ in labels[:8])
            return Description(text=f"a picture with: {names}", backend=self.name,
                               confidence=None, labels=labels)
        raise PromptBackendError(f"{where} returned neither a caption nor tags for the image")


def _read_quietly(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read() or b""
    except Exception:  # the body of an error response is a nicety, not a requirement
        return b""


def _azure_error(body: bytes) -> tuple[str, str]:
    """Azure's ``{"error": {"code", "message"}}`` (or the older flat form), if present."""
    try:
        data = json.loads(body)
    except ValueError:
        return "", _clip(body.decode("utf-8", "replace"), 200) if body else ""
    if not isinstance(data, dict):
        return "", ""
    err = data.get("error", data)
    if not isinstance(err, dict):
        return "", _clip(str(err), 200)
    return str(err.get("code") or ""), _clip(str(err.get("message") or ""), 200)


# --------------------------------------------------------------------------- choosing


def describer(spec: str | None = None) -> Describer:
    """A describer from a spec: "local" (default), "openai", "openai:MODEL" or "azure".

    Without a spec, ``BILDWERK_DESCRIBER`` decides, then "local".
    """
    raw = (spec or os.environ.get("BILDWERK_DESCRIBER") or "local").strip()
    kind, _, arg = raw.partition(":")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind == "local" and not arg:
        return LocalDescriber()
    if kind == "openai":
        return OpenAIVisionDescriber(model=arg or None)
    if kind == "azure" and not arg:
        return AzureDescriber()
    raise InvalidRequestError(
        f"unknown describer {raw!r}; choose one of: {', '.join(DESCRIBER_CHOICES)}"
    )


# --------------------------------------------------------------------------- merging

# Verbs that start an edit instruction; "X and VERB ..." splits into two edits.
_VERBS = (
    r"make|turn|convert|transform|change|render|draw|paint|redraw|recreate|reimagine|"
    r"restyle|style|show|put|place|move|set|position|add|include|insert|give|remove|"
    r"delete|erase|get\s+rid\s+of|take\s+(?:out|away)|replace|swap"
)
# A separator (",", ";", ". ", "and", "then") only splits when a verb follows it, so
# "add salt and pepper" stays one instruction.
_SPLIT = re.compile(
    rf"(?:\s*(?:[,;]|\.(?=\s))\s*(?:and\s+)?(?:then\s+)?|\s+(?:and\s+then|and|then)\s+)"
    rf"(?=(?:{_VERBS})\b)",
    re.IGNORECASE,
)
_POLITE_START = re.compile(
    r"^(?:(?:please|kindly|can\s+you|could\s+you|would\s+you|i\s+want\s+you\s+to|"
    r"i'?d\s+like\s+you\s+to|now)[\s,]+)+",
    re.IGNORECASE,
)
_POLITE_END = re.compile(r"(?:[\s,]+please)?[\s.!?]*$", re.IGNORECASE)
# What "it" can be in an instruction about the whole picture.
_OBJ = (
    r"(?:it|this|that|them|everything|all|"
    r"(?:the|this|that|my)\s+(?:image|picture|photo|photograph|pic|scene|drawing|painting|"
    r"illustration|artwork|whole\s+thing))"
)
_REL = (
    r"(?:on\s+top\s+of|in\s+front\s+of|next\s+to|close\s+to|on|in|at|under|underneath|"
    r"beneath|below|above|over|behind|beside|near|inside|into|onto|against|among|by|"
    r"along|across|through|around)"
)
_STYLE_START = re.compile(r"^(?:as|in\s+the\s+style\s+of|looking\s+like)\b", re.IGNORECASE)
# Generic "this is a picture" openings that contradict a new medium ("as a watercolor").
_MEDIUM = re.compile(
    r"^(?:an?\s+)?(?:(?:close-up|closeup|color|colour|digital|stock)\s+)?"
    r"(?:photo|photograph|picture|image|snapshot)\s+of\s+",
    re.IGNORECASE,
)
_ARTICLE = re.compile(r"^(?:a|an|the|some)\s+", re.IGNORECASE)


# Templates that restyle the whole picture (a new medium or style).
_RESTYLE = frozenset({"as {x}", "{x} ", "looking like {x}"})


def _rules() -> list[tuple[re.Pattern[str], str]]:
    """(pattern, template) pairs, first match wins; templates use the named groups.

    "{x} " (trailing space, stripped on use) marks a restyling "{x}" ("draw it in ink").
    """
    r: list[tuple[str, str]] = [
        # background changes, before the generic make/change/set rules
        (r"(?:change|replace|swap|set|turn|make)\s+the\s+background\s+(?:in)?(?:to|with|into|for)\s+"
         r"(?P<x>.+)", "{background}"),
        (r"make\s+the\s+background\s+(?P<x>.+)", "{background}"),
        # whole-picture restyling
        (rf"(?:turn|convert|transform|change|make)\s+{_OBJ}\s+(?:in)?to\s+(?P<x>.+)", "as {x}"),
        (rf"(?:render|draw|paint|redraw|recreate|reimagine|restyle|style|show|make)\s+{_OBJ}\s+"
         r"(?P<x>(?:as|in|like)\b.+)", "{x} "),
        (rf"make\s+{_OBJ}\s+look\s+like\s+(?P<x>.+)", "looking like {x}"),
        (rf"make\s+{_OBJ}\s+look\s+(?P<x>.+)", "{x}"),
        (rf"make\s+{_OBJ}\s+(?P<x>(?:a|an)\s+.+)", "as {x}"),
        (rf"make\s+{_OBJ}\s+(?P<x>.+)", "{x}"),
        # placing things
        (rf"(?:put|place|move|set|position|show)\s+(?P<thing>.+?)\s+(?P<rel>{_REL}\s+.+)",
         "{placed}"),
        # adding and giving
        (r"(?:add|include|insert)\s+(?P<x>.+?)\s+(?<!next\s)(?<!close\s)(?:to|into|onto)\s+"
         r"(?P<target>.+)", "{added}"),
        (r"(?:add|include|insert)\s+(?P<x>.+)", "with {x}"),
        (rf"give\s+{_OBJ}\s+(?P<x>.+)", "with {x}"),
        (r"give\s+(?:the\s+)?\S+\s+(?P<x>(?:a|an|some)\s+.+)", "with {x}"),
        # removing and replacing
        (r"(?:remove|delete|erase|get\s+rid\s+of|take\s+(?:out|away))\s+(?P<x>.+?)"
         r"(?:\s+from\s+.+)?", "without {x}"),
        (r"(?:replace|swap)\s+(?P<old>.+?)\s+(?:with|for)\s+(?P<new>.+)",
         "with {new} instead of {old}"),
        (r"(?:turn|change|transform|convert)\s+(?P<old>.+?)\s+(?:in)?to\s+(?P<new>.+)",
         "with {new} instead of {old}"),
        # "make the sky purple": the verb is noise to an image generator
        (r"make\s+(?P<x>.+)", "{x}"),
    ]
    return [(re.compile(rf"^{p}$", re.IGNORECASE | re.DOTALL), t) for p, t in r]


_RULES = _rules()


def _words(text: str) -> set[str]:
    # A crude singular ("cats" ~ "cat") is enough to tell whether a thing was described.
    return {w.rstrip("s") for w in re.findall(r"[a-z]+", text.lower())
            if w not in {"a", "an", "the", "some", "my", "this", "that"}}


def _is_whole_picture(thing: str) -> bool:
    return re.fullmatch(_OBJ, thing.strip(), re.IGNORECASE) is not None


def _edit_fragment(clause: str, description: str) -> tuple[str, bool]:
    """One edit clause as a prompt fragment ("make it a watercolor" -> "as a watercolor").

    The flag says whether the fragment restyles the whole picture.
    """
    for pattern, template in _RULES:
        m = pattern.match(clause)
        if not m:
            continue
        g = {k: v.strip() for k, v in m.groupdict().items() if v}
        if template == "{background}":
            x = g["x"]
            # "to a beach" names a thing; "to white" is a colour or material.
            if _ARTICLE.match(x):
                return f"with {x} in the background", False
            return f"with a {x} background", False
        if template == "{placed}":
            thing, rel = g["thing"], g["rel"]
            # Placing the described subject (or "it") keeps only where it goes.
            if _is_whole_picture(thing) or _words(thing) <= _words(description):
                return rel, False
            return f"with {thing} {rel}", False
        if template == "{added}":
            target = g["target"]
            if _is_whole_picture(target):
                return f"with {g['x']}", False
            return f"with {g['x']} on {target}", False
        return template.format(**g).strip(), template in _RESTYLE
    # Not an instruction we know ("on a beach", "in the style of Monet"): keep as written.
    return clause, _STYLE_START.match(clause) is not None


def _clean_edit(edit: str) -> list[str]:
    text = _one_line(edit)
    clauses = []
    for part in _SPLIT.split(text):
        part = _POLITE_END.sub("", _POLITE_START.sub("", part.strip(" ,;")))
        if part:
            clauses.append(part)
    return clauses


def merge_description(description: str, edit: str) -> str:
    """Merge an image description and an edit instruction into one generation prompt, by rule.

    Each instruction in the edit (split at ",", ";", "and", "then" before a known verb)
    becomes a fragment appended to the description, comma-separated and in order:

    * "make it a watercolor" / "turn it into a watercolor" -> "as a watercolor";
      "make it darker" -> "darker"; "draw it in the style of Monet" -> "in the style of Monet"
    * "put the cat on a beach" -> "on a beach" (the subject comes from the description);
      "put a hat on the dog" -> "with a hat on the dog" (a new thing is kept)
    * "add a hat" -> "with a hat"; "add snow to the mountains" -> "with snow on the mountains"
    * "remove the car" -> "without the car"; "replace the car with a bike" ->
      "with a bike instead of the car"
    * "change the background to a beach" -> "with a beach in the background"
    * anything else is kept as written ("in winter", "at night").

    When a fragment restyles the whole picture ("as ...", "in the style of ...", "looking
    like ..."), a generic leading "a photo of" / "an image of" is dropped from the
    description, since it would contradict the new medium.

    Limits: English only; the result is a concatenation, so nothing in the description is
    replaced or removed ("a cat on a sofa" + "put the cat on a beach" keeps both places;
    "without X" and "instead of X" still mention X, which diffusion models tend to draw).
    For those, use :func:`merge_with_llm`.
    """
    desc = _one_line(description).rstrip(" .")
    if not _one_line(edit):
        return desc
    if not desc:
        return _one_line(edit)
    fragments: list[str] = []
    restyled = False
    for clause in _clean_edit(edit):
        fragment, style = _edit_fragment(clause, desc)
        restyled |= style
        if fragment and fragment.lower() not in (f.lower() for f in fragments):
            fragments.append(fragment)
    if not fragments:
        return desc
    if restyled:
        desc = _MEDIUM.sub("", desc, count=1) or desc
    return ", ".join([desc, *fragments])


class _ChatLike(Protocol):
    def complete(self, system: str, user: str, *, seed: int | None = ..., max_tokens: int = ...,
                 temperature: float = ...) -> str: ...


MERGE_SYSTEM = (
    "You write prompts for an image generator. You get a description of an existing image "
    "and an edit instruction. Write one prompt that describes the edited image: keep the "
    "subject and the details the edit does not change, apply the edit, and leave out "
    "whatever the edit replaces or removes. Answer with the prompt only: one line, no "
    "quotes, no explanation."
)
_PREFIX = re.compile(
    r"^(?:(?:here\s+is|here's)\s+(?:the|a|your)\s+(?:merged\s+|new\s+|edited\s+)?prompt\s*:?|"
    r"(?:merged\s+|new\s+|edited\s+|final\s+)?prompt\s*:|answer\s*:|output\s*:)\s*",
    re.IGNORECASE,
)
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)
_WRAP = "\"'`*“”‘’«»"


def _clean_line(text: str) -> str:
    """The first meaningful line of a model's answer, without labels, quotes or markdown."""
    text = _THINK.sub("", text)
    for line in text.splitlines():
        line = line.strip().lstrip("-•>#").strip()
        line = _PREFIX.sub("", line).strip()
        line = line.strip(_WRAP).strip()
        if line and not line.endswith(":"):
            return _one_line(line)
    return ""


def merge_with_llm(description: str, edit: str, backend: _ChatLike,
                   seed: int | None = None) -> str:
    """Ask a chat model (anything with ``complete(system, user, ...)``) for the merged prompt.

    An empty edit returns the description and an empty description the edit, without
    asking. The answer is cleaned to one line; an empty answer is a
    :class:`~bildwerk.errors.PromptBackendError` (there is no silent fallback: call
    :func:`merge_description` yourself if you want one).
    """
    desc, instruction = _one_line(description), _one_line(edit)
    if not instruction:
        return desc
    if not desc:
        return instruction
    user = f"Image description: {desc}\nEdit instruction: {instruction}\nPrompt:"
    try:
        answer = backend.complete(MERGE_SYSTEM, user, seed=seed, max_tokens=120, temperature=0.3)
    except BildwerkError:
        raise
    except Exception as exc:  # a backend outside bildwerk may raise anything
        raise PromptBackendError(f"the merge model failed: {_clip(str(exc))}") from exc
    merged = _clean_line(answer or "")
    if not merged:
        name = getattr(backend, "name", type(backend).__name__)
        raise PromptBackendError(f"the merge model {name} answered with an empty prompt")
    return merged
