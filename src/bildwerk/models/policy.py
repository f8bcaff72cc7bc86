"""Which model references may be used, decided by the operator.

The operator (the command line, Python) may name any folder or hub id. A server's clients may
name only what the operator made available: the default model, the models in the models
folder (``$BILDWERK_HOME/models/NAME``), the single-file checkpoints there and in registered
A1111/ComfyUI folders (by name), the references the operator registered when starting
the server (``--model``, ``--allow-model``, ``BILDWERK_MODELS``) and remote ``openai:`` models.
Everything else (absolute or relative paths, ``~``, ``..``, hub ids) is refused with one and
the same message, whatever is or is not there: the answer must not tell a client what exists
on the server, and a client must not make the server download from the hub.
``allow_any`` (``--allow-any-model``) restores the operator's freedom for trusted setups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bildwerk.core.errors import ModelNotFoundError
from bildwerk.core.refs import is_remote_model

# One message for every refused reference: it must not depend on what the reference names.
NOT_AVAILABLE = "this model is not available on this server; GET /api/v1/models lists the models it serves"
DEFAULT_NAMES = frozenset({"", "default"})
_NOT_IN_A_NAME = ("/", "\\", "\x00")


@dataclass(frozen=True)
class ModelPolicy:
    registered: frozenset[str] = frozenset()  # references the operator made available, as written
    allow_any: bool = False  # every reference, as on the command line (hub downloads included)

    @classmethod
    def operator(cls) -> ModelPolicy:
        """The command line's and Python's policy: whoever runs the process may name anything."""
        return cls(allow_any=True)

    @classmethod
    def for_clients(cls, registered: Iterable[str | None] = (), *, allow_any: bool = False) -> ModelPolicy:
        """A server's policy: the registered references (unset ones skipped) and the models folder."""
        names = frozenset(r.strip() for r in registered if r and r.strip())
        return cls(registered=names, allow_any=allow_any)

    def permits(self, ref: str | None) -> bool:
        """Whether ``ref`` may be used; decided from the text and the models folder's listing,
        never by looking the reference itself up on the file system."""
        if self.allow_any or ref is None or ref in DEFAULT_NAMES or is_remote_model(ref):
            return True
        if ref in self.registered:  # exactly as the operator wrote it: nothing is resolved first
            return True
        return is_plain_name(ref) and ref in _installed()

    def permitted(self, refs: Iterable[str]) -> set[str]:
        """The ``refs`` that ``permits`` allows, the models folder and sources listed once (a
        listing asks for every checkpoint it shows)."""
        refs = list(refs)
        if self.allow_any:
            return set(refs)
        installed = set(_installed())
        return {r for r in refs if r in DEFAULT_NAMES or is_remote_model(r) or r in self.registered
                or (is_plain_name(r) and r in installed)}

    def check(self, ref: str | None) -> None:
        """Raise the one ``model_not_found`` a refused reference gets (a 404 on every surface)."""
        if not self.permits(ref):
            raise ModelNotFoundError(NOT_AVAILABLE)

    def names(self) -> list[str]:
        """What a client may name, for listings: installed models, then registered ones."""
        installed = _installed()
        return installed + sorted(r for r in self.registered if r not in installed and not is_remote_model(r))


def is_plain_name(ref: str) -> bool:
    """A name, not a path: no separators, not ``.``/``..``, nothing ``~`` expands."""
    return bool(ref) and not any(c in ref for c in _NOT_IN_A_NAME) and not ref.startswith((".", "~"))


def _installed() -> list[str]:
    from bildwerk.models.loader import checkpoint_names, local_model_names

    folders = local_model_names()
    return folders + sorted(set(checkpoint_names()) - set(folders))
