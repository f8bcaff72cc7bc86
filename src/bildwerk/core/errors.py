"""Error types every face (CLI, REST, UI, batch) maps to a clear message.

Each error carries a short machine-readable ``code`` so the REST layer can answer
400/404/409 with structured bodies and the CLI can print one friendly line.
"""

from __future__ import annotations

import re


class BildwerkError(Exception):
    """Base class: a failure with a message meant for the user."""

    code = "error"


class InvalidRequestError(BildwerkError, ValueError):
    """The request itself is wrong (bad size, missing image, unknown scheduler...)."""

    code = "invalid_request"


class InvalidImageError(InvalidRequestError):
    """Bytes that are not an accepted image, or an image over the limits."""

    code = "invalid_image"


class NotConfiguredError(InvalidRequestError):
    """A request that needs something this installation lacks (an API key, a backend): it
    cannot succeed here, so it is refused when submitted rather than failed in the worker."""

    code = "not_configured"


class ModelNotFoundError(BildwerkError):
    """A model reference that resolves to nothing usable (offline hub id, missing folder)."""

    code = "model_not_found"


class ModelExistsError(BildwerkError):
    """Installing a model under a name that is taken (replacing it needs ``force``)."""

    code = "model_exists"


class UnsafeModelError(BildwerkError):
    """A model whose weights are not safetensors (pickle checkpoints can run code)."""

    code = "unsafe_model"


class GenerationCancelled(BildwerkError):
    """The caller cancelled the generation between two denoising steps."""

    code = "cancelled"


class UnsupportedModelError(BildwerkError):
    """A model folder that loads but is not a pipeline family bildwerk can drive."""

    code = "unsupported_model"


class PromptBackendError(BildwerkError):
    """A prompt step's backend (LLM, translator, describer) failed, timed out or answered nonsense."""

    code = "prompt_backend"


class PromptAnswerRejected(PromptBackendError):
    """A model answered, but not usably: the answer lost the prompt's subject, or a
    "translation" echoed the input or stayed in its language (prompts/answer.py)."""

    code = "prompt_answer_rejected"

    def __init__(self, message: str, *, answer: str = "", reason: str = "", checks: dict | None = None) -> None:
        super().__init__(message)
        self.answer, self.reason, self.checks = answer, reason, dict(checks or {})

    def details(self) -> dict:
        """What a prompt step records about the answer it threw away."""
        return {"rejected": self.answer, "reason": self.reason, **self.checks}


class RemoteError(BildwerkError):
    """A remote image service (e.g. the OpenAI Images API) failed or could not be reached."""

    code = "remote_error"


class RemoteRateLimited(RemoteError):
    """The remote service kept answering 429 after the client's own retries."""

    code = "remote_rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        # Seconds the service asked us to wait (Retry-After), so callers can back off.
        self.retry_after = retry_after


class RemoteAuthError(RemoteError):
    """The remote service has no API key, or refused the one it was given."""

    code = "remote_auth"


class RemoteTimeout(RemoteError):
    """The remote service did not answer within the timeout."""

    code = "remote_timeout"


# An absolute file path in a message: /a/b, ~/a, ~user/a, C:\a. It starts a word (not the
# path part of a URL or of "org/name") and runs to the next space, quote or bracket.
_PATH = re.compile(r"""(?<![\w.:/\\~-])(?:~[\w.-]*/|/|[A-Za-z]:\\)[^\s'"`<>()\[\]{},;]*""")
# Paths of this server's own API that messages name on purpose ("GET /api/v1/models").
_ROUTES = ("/api/", "/sdapi/", "/v1/", "/health", "/ready", "/metrics", "/docs", "/openapi.json")


def hide_paths(message: str) -> str:
    """A message fit for a remote client: every absolute file path replaced by its last name
    ("could not load /srv/models/sd15" -> "could not load sd15"), so an answer never shows
    where things are on the server. Our API's own routes stay. Lower layers write messages
    for the operator (the command line shows full paths); the server passes its answers here."""
    return _PATH.sub(_last_name, message)


def _last_name(match: re.Match[str]) -> str:
    path = match.group(0)
    if path.startswith(_ROUTES) or path in ("/", "~/"):
        return path
    trail = path[-1] if path[-1] in ".:" else ""  # sentence punctuation after the path
    parts = [p for p in re.split(r"[/\\]", path.removesuffix(trail)) if p and not p.startswith("~")]
    return (parts[-1] if parts else "") + trail
