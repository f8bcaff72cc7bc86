"""Free text from people and clients: what may be stored, recorded in PNG chunks and echoed."""

from __future__ import annotations

import re

# Tab, newline and carriage return are text; other C0/C1 controls (NUL...) are not, and PNG
# text chunks (where prompts are recorded) may not hold them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def text_problem(value: str) -> str | None:
    """Why ``value`` is not storable text (a control character, an unpaired surrogate), or None."""
    bad = _CONTROL.search(value)
    if bad:
        return f"contains the control character U+{ord(bad.group()):04X}; remove it"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains an unpaired surrogate (U+{ord(value[exc.start]):04X}); send valid Unicode text"
    return None


def check_text(value: str) -> str:
    """``value`` when it is storable text; else a ValueError saying why (for pydantic validators)."""
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value
