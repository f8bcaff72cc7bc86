"""Model references: the one place that knows what kind of model a reference names.

A reference is what a user or client writes for a model: unset (the default model), a
folder, a registered name, a hub id, or ``openai:<model>`` for the remote Images API. Engines
register by kind (engines/registry.py), so a new remote service is a new kind here and one
registration there.
"""

from __future__ import annotations

from bildwerk.core.errors import InvalidRequestError

OPENAI_PREFIX = "openai:"
LOCAL = "local"
OPENAI = "openai"


def reference_kind(ref: str | None) -> str:
    """``openai`` for ``openai:<model>``, else ``local`` (diffusers folders, names, hub ids)."""
    return OPENAI if is_remote_model(ref) else LOCAL


def is_remote_model(ref: str | None) -> bool:
    """Whether a model reference names a remote model (``openai:<model>``)."""
    return isinstance(ref, str) and ref.strip().lower().startswith(OPENAI_PREFIX)


def remote_model_name(ref: str | None) -> str:
    """The OpenAI model id in ``openai:<model>`` (lower-cased, as OpenAI spells its ids)."""
    if not is_remote_model(ref):
        raise InvalidRequestError(f"{ref!r} is not a remote model; use openai:<model>")
    assert ref is not None
    name = ref.strip()[len(OPENAI_PREFIX) :].strip().lower()
    if not name:
        raise InvalidRequestError("'openai:' names no model; use e.g. openai:gpt-image-1")
    return name
