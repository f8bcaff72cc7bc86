"""Figures a test measured, for bench/reliability.py: with ``BILDWERK_RELIABILITY_REPORT``
set, each ``record`` call appends one JSON line to that file; otherwise it does nothing."""

from __future__ import annotations

import json
import os
from typing import Any


def record(fault: str, **figures: Any) -> None:
    path = os.environ.get("BILDWERK_RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"fault": fault, **figures}) + "\n")
