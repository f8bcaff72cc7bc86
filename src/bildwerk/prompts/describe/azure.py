"""A describer backed by Azure Computer Vision v3.2 "describe"."""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from io import BytesIO

from PIL import Image

from bildwerk.core.errors import InvalidRequestError, PromptBackendError
from bildwerk.core.openai_errors import retry_after_seconds
from bildwerk.images.io import encode_png
from bildwerk.prompts.describe.base import MAX_SIDE, Description, ImageInput, _as_image, _fit
from bildwerk.prompts.describe.text import _clip, _one_line, _redact


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
