"""docs/examples/pool.ipynb runs as written: its code cells in order, offline, on the default model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "examples" / "pool.ipynb"


@pytest.mark.extended
def test_the_pool_notebook_runs(tmp_path):
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    script = tmp_path / "notebook.py"
    script.write_text(code + "\nassert summary.outcome == 'complete', summary\nassert again.made == 0\n",
                      encoding="utf-8")
    env = {**os.environ, "BILDWERK_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("BILDWERK_LLM", None)
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "complete" in res.stdout and "0 new pictures" in res.stdout
    assert (tmp_path / "pools" / "medicine" / "sheets" / "interiors.png").is_file()
