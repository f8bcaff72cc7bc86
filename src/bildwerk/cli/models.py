"""``bildwerk models``: install a trained model under a name, list the installed ones."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bildwerk.cli.common import _fail, app, console, out_console
from bildwerk.core.errors import BildwerkError

models_app = typer.Typer(help="Installed models: add a trained one under a name, list them.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("add")
def add(
    path: Annotated[Path, typer.Argument(help="A training run's folder (its model/), or a diffusers model folder.")],
    name: Annotated[str | None, typer.Option("--name", help="The name to use it by (--model NAME); default: the model's own.")] = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default model (used when no --model is given).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an installed model of the same name.")] = False,
) -> None:
    """Check a model (safetensors, a pipeline bildwerk drives) and install it into the models folder."""
    from bildwerk.models.install import install_model

    try:
        m = install_model(path, name, force=force, make_default=default)
    except BildwerkError as exc:
        _fail(exc)
        raise
    out_console.print(f"installed {escape(m.name)} ({m.family}, {m.native_size} px, {_mb(m.bytes)}) at {m.path}")
    if default and os.environ.get("BILDWERK_MODEL"):
        console.print(f"[yellow]warning[/]: BILDWERK_MODEL={escape(os.environ['BILDWERK_MODEL'])} is set and "
                      "wins over the chosen default; unset it to use this one")
    out_console.print(f"use it: bildwerk generate \"...\" --model {escape(m.name)}"
                      + (" (or without --model: it is the default now)" if m.default else ""))


@models_app.command("list")
def list_models() -> None:
    """Every installed model: name, family, size, disk use and the languages it reads."""
    from bildwerk.models.install import installed_models

    table = Table("name", "family", "size", "disk", "languages", box=None)
    for m in installed_models():
        table.add_row(escape(m.name) + (" (default)" if m.default else ""), m.family or "?",
                      f"{m.native_size} px" if m.native_size else "?", _mb(m.bytes),
                      ", ".join(m.languages) if m.languages is not None else "any")
    out_console.print(table)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
