"""The README's Python example runs as written (docs that are true)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path):
    text = README.read_text("utf-8")
    section = text[text.index("## From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    env = {**os.environ, "BILDWERK_DEVICE": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "de" in out.stdout.split()[-1]
    assert len(list((tmp_path / "outputs/python").glob("*.png"))) == 2
