"""Wildcards and combinatorial prompts through dynamicprompts.

``{red|green|blue} car`` picks one option; ``__color__`` picks a line of the wildcard file
``color.txt`` (shipped in ``data/wildcards/``, extended by ``$BILDWERK_HOME/wildcards/``).
Random picks are seeded, so the same template and seed give the same prompt; the template
and the resolved prompt are both recorded.
"""

from __future__ import annotations

import re

from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.paths import data_dirs

_SYNTAX = re.compile(r"\{[^{}]*\|[^{}]*\}|__[\w\-/*]+__")
MAX_COMBINATIONS = 10_000


def has_wildcards(text: str) -> bool:
    return bool(_SYNTAX.search(text))


def _manager():
    from dynamicprompts.wildcards import WildcardManager

    roots = [d for d in data_dirs("wildcards") if d.is_dir()]
    return WildcardManager(root_map={"": roots}) if roots else WildcardManager()


def _check_names(template: str, manager) -> None:
    for name in re.findall(r"__([\w\-/]+)__", template):
        if not manager.get_values(name):
            known = ", ".join(sorted(manager.get_collection_names())[:40])
            raise InvalidRequestError(f"unknown wildcard __{name}__; known: {known}")


def check(template: str) -> None:
    """Before the job is queued: every ``__name__`` the template uses exists."""
    if "__" in template:
        _check_names(template, _manager())


def resolve(template: str, seed: int) -> str:
    """One prompt from a template, the same for the same seed."""
    from dynamicprompts.generators import RandomPromptGenerator

    manager = _manager()
    _check_names(template, manager)
    try:
        out = RandomPromptGenerator(manager, seed=seed).generate(template, 1)
    except Exception as exc:  # dynamicprompts raises parser errors of several types
        raise InvalidRequestError(f"cannot read the wildcard template {template!r}: {exc}") from exc
    return str(out[0]) if out else template


def combinations(template: str, limit: int = 100) -> list[str]:
    """Every prompt a template can make, at most ``limit`` (for batches and pools)."""
    from dynamicprompts.generators import CombinatorialPromptGenerator

    if not 1 <= limit <= MAX_COMBINATIONS:
        raise InvalidRequestError(f"limit must be between 1 and {MAX_COMBINATIONS}")
    manager = _manager()
    _check_names(template, manager)
    try:
        return [str(p) for p in CombinatorialPromptGenerator(manager).generate(template, max_prompts=limit)]
    except Exception as exc:
        raise InvalidRequestError(f"cannot read the wildcard template {template!r}: {exc}") from exc
