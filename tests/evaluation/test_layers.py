"""Layering: the models layer and the prompt layer never import the evaluation (lab) layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bildwerk

SRC = Path(bildwerk.__file__).parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("models", ("prompts", "engines", "train", "evaluation")),
        ("prompts", ("evaluation",)),
    ],
)
def test_lower_layers_do_not_import_higher_ones(package: str, forbidden: tuple[str, ...]) -> None:
    bad = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in sorted((SRC / package).rglob("*.py"))
        for name in _imports(path)
        if any(name == f"bildwerk.{f}" or name.startswith(f"bildwerk.{f}.") for f in forbidden)
    ]
    assert not bad, bad


def test_the_class_names_ship_with_the_classifier() -> None:
    from bildwerk.models.imagenet.labels import CLASS_FILE, class_synonyms

    assert CLASS_FILE.parent == SRC / "models" / "imagenet" and CLASS_FILE.is_file()
    assert len(class_synonyms()) == 1000
