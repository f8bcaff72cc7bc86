"""Where bildwerk keeps things: the user's folder and the data files shipped in the package.

Data that users tune (lexicons, styles, wildcards) ships in ``bildwerk/data/<kind>/`` and
may be extended or overridden by files of the same name in ``$BILDWERK_HOME/<kind>/``.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"


def bildwerk_home() -> Path:
    return Path(os.environ.get("BILDWERK_HOME") or Path.home() / ".local" / "share" / "bildwerk")


def data_dirs(kind: str) -> list[Path]:
    """Folders holding data of one kind, package first, so user files override it."""
    return [PACKAGE_DATA / kind, bildwerk_home() / kind]


def data_files(kind: str, pattern: str) -> list[Path]:
    """Every file matching ``pattern`` in the package's and the user's folder of ``kind``."""
    return [p for d in data_dirs(kind) if d.is_dir() for p in sorted(d.glob(pattern)) if p.is_file()]
