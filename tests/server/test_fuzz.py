"""A bounded schemathesis run over the server's own /openapi.json (issue 14 item 8).

A real server on the tiny SD model answers every case schemathesis derives from the document
(its examples; the coverage phase's boundaries, wrong types and unexpected methods; random
fuzzing; short stateful chains through job ids): no 5xx, no status, content type, header or
JSON body the document does not list, a complete Allow on every 405. Settings and checks:
tests/server/schemathesis.toml; cost caps: tests/harness/fuzz_hooks.py. Deterministic, about
4 minutes on two busy cores; `make test-fuzz`.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness.figures import record
from harness.server import ServerProcess

pytestmark = pytest.mark.fuzz

HERE = Path(__file__).parent
ST = str(Path(sys.executable).parent / "st")


def summarize(ndjson: Path) -> tuple[int, collections.Counter]:
    """Requests sent, and answers by status, from schemathesis' event log."""
    statuses: collections.Counter = collections.Counter()
    for line in ndjson.read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        for interaction in (event or {}).get("recorder", {}).get("interactions", {}).values():
            response = interaction.get("response")
            statuses[response["status_code"] if response else "no answer"] += 1
    return sum(statuses.values()), statuses


@pytest.mark.timeout(900)
def test_the_server_answers_only_what_its_openapi_document_says(tiny_models, tmp_path):
    # A small queue, so 429 is answered too; remote calls go to a closed local port.
    srv = ServerProcess(tmp_path, str(tiny_models["sd"]), max_queue=4,
                        extra_env={"BILDWERK_OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    srv.start()
    try:
        srv.wait_ready()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}  # harness.fuzz_hooks
        started = time.monotonic()
        run = subprocess.run(
            [ST, "--config-file", str(HERE / "schemathesis.toml"), "run", f"{srv.url}/openapi.json",
             "--report", "ndjson", "--report-dir", str(tmp_path / "report"), "--no-color"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=840)
        seconds = time.monotonic() - started
        with srv.client() as c:
            failed = c.get("/api/v1/jobs", params={"status": "failed", "limit": 500}).json()["jobs"]
    finally:
        srv.stop()
    requests, statuses = summarize(next((tmp_path / "report").glob("*.ndjson")))
    print(f"schemathesis: {requests} requests in {seconds:.0f} s; statuses {dict(sorted(statuses.items(), key=str))}")
    record("openapi-fuzz", requests=requests, seconds=round(seconds), passed=run.returncode == 0,
           answers_5xx=sum(v for k, v in statuses.items() if isinstance(k, int) and k >= 500))
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    # Failures the HTTP answers cannot show: an accepted job that broke in the worker, or a
    # 500 behind a streamed answer.
    assert not [j for j in failed if j["error"]["code"] == "internal"], failed
    log = srv.log.read_text(errors="replace")
    assert "unhandled error" not in log, log[log.find("unhandled error"):][:4000]
