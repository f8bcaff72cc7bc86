"""bildwerk's command line: a thin face over the same use case the server and Python use.

Commands live by concern in ``generate.py``, ``models.py``, ``pool.py``, ``service.py`` and
``training.py``; importing them registers them on the one Typer ``app`` (``common.py``).
"""

from __future__ import annotations

import sys

from bildwerk.cli import generate, models, pool, service, training  # noqa: F401 (registers the commands)
from bildwerk.cli.common import app, console

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        sys.exit(130)
