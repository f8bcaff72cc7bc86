"""The reliability figures of docs/reliability.md, in one run: hostile inputs, the OpenAPI
fuzz, faults and load, against real servers started here.

    make reliability                    # or: .venv/bin/python bench/reliability.py
    .venv/bin/python bench/reliability.py --only corpus,load --quick

Run it alone on the machine (about 10 minutes on 2 cores; ``--quick`` about 4). Parts:

- ``corpus``: every case of tests/harness/hostile.py against a fresh server (tiny SD model,
  2 MiB body limit): statuses, 5xx, cases whose answer is not a clear documented 4xx, jobs
  created (must be 0), /health after each case, unhandled errors in the server log.
- ``fuzz``: the schemathesis run of tests/server/test_fuzz.py (server errors, undocumented statuses).
- ``faults``: the fault tests (tests/server/test_faults.py: a SIGKILL loop, a full disk on a
  tmpfs, what killed writes leave, SIGTERM with waiting clients at the default 20 s drain, a
  corrupt model); the figures they record.
- ``load``: bench/load.py (burst over the queue bound, 16 steady clients, big images, /health).

Writes ``bench/results/<date>-reliability.json`` and ``.md`` and prints the markdown table.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from machine import cpu_name  # bench/machine.py (scripts run from bench/)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness.hostile import MAX_BODY, corpus, problems, send  # noqa: E402
from harness.server import ServerProcess  # noqa: E402

PARTS = ("corpus", "fuzz", "faults", "load")


def run_corpus() -> dict[str, Any]:
    from bildwerk.models.tiny import save_tiny_model

    cases = corpus()
    statuses: collections.Counter[int] = collections.Counter()
    bad: list[str] = []
    unhealthy = 0
    with tempfile.TemporaryDirectory(prefix="bildwerk-corpus-") as tmp:
        root = Path(tmp)
        model = save_tiny_model(root / "sd", "sd")
        srv = ServerProcess(root, str(model), extra_env={"BILDWERK_MAX_BODY_BYTES": str(MAX_BODY)}).start()
        try:
            srv.wait_ready()
            t0 = time.perf_counter()
            with srv.client() as c:
                for case in cases:
                    try:
                        r = send(c, case)
                        statuses[r.status_code] += 1
                        found = problems(r, case, secrets=(str(root),))
                    except httpx.RemoteProtocolError:
                        statuses[0] += 1  # connection closed (allowed after a 413 only)
                        found = [] if case.expect == {413} else ["connection dropped"]
                    if found:
                        bad.append(f"{case.name}: {found[0]}")
                    unhealthy += c.get("/health").status_code != 200
                jobs = c.get("/api/v1/jobs").json()["total"]
            seconds = time.perf_counter() - t0
            log = srv.log.read_text(errors="replace")
        finally:
            srv.stop()
    surfaces = collections.Counter("/".join(c.path.split("?")[0].split("/")[1:3]) for c in cases)
    return {"cases": len(cases), "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "server_errors": sum(v for k, v in statuses.items() if k >= 500), "not_clear_4xx": bad,
            "jobs_created": jobs, "unhealthy_after": unhealthy, "unhandled_in_log": log.count("unhandled error"),
            "seconds": round(seconds, 1), "by_surface": dict(surfaces)}


def run_pytest(selection: list[str], marker: str, report: Path, **env_extra: str) -> dict[str, Any]:
    """A marked pytest group; its tests write their figures as JSON lines to ``report``."""
    env = {**os.environ, "BILDWERK_RELIABILITY_REPORT": str(report), **env_extra}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", marker, "-p", "no:cacheprovider", *selection],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1:] or [""]
    figures = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    return {"exit_code": proc.returncode, "summary": tail[0], "seconds": round(time.perf_counter() - t0, 1),
            "figures": figures}


def run_load(quick: bool) -> dict[str, Any]:
    import load  # bench/load.py

    return load.run(quick, 10.0 if quick else 30.0)


def markdown(report: dict[str, Any]) -> str:
    r = report["results"]
    rows: list[tuple[str, str]] = []
    if "corpus" in r:
        c = r["corpus"]
        rows += [("hostile cases tried (every surface)", str(c["cases"])),
                 ("... answered 5xx", str(c["server_errors"])),
                 ("... not a clear documented 4xx", str(len(c["not_clear_4xx"]))),
                 ("... jobs created / server unhealthy after", f"{c['jobs_created']} / {c['unhealthy_after']}")]
    if "fuzz" in r:
        f = r["fuzz"]
        rows.append(("OpenAPI fuzz (schemathesis)", f["summary"] or f"exit {f['exit_code']}"))
        for fig in f["figures"]:
            fig.pop("fault", None)
            rows += [(f"fuzz: {k}", str(v)) for k, v in fig.items()]
    if "faults" in r:
        f = r["faults"]
        rows.append(("fault tests", f["summary"] or f"exit {f['exit_code']}"))
        for fig in f["figures"]:
            name = fig.pop("fault", "fault")
            rows += [(f"{name}: {k}", str(v)) for k, v in fig.items()]
    if "load" in r:
        lo = r["load"]
        b = lo["burst"]
        rows += [("burst over the queue bound: sent / 202 / 429 (with Retry-After) / lost",
                  f"{b['sent']} / {b['accepted']} / {b['refused_429']} ({b['refused_with_retry_after']}) / {b['lost']}"),
                 ("16 steady clients (A1111 txt2img): p50 / p95 ms",
                  f"{lo['steady']['p50_ms']} / {lo['steady']['p95_ms']}"),
                 (f"big images ({lo['big_images']['side']} px, 2 clients): p50 / p95 ms",
                  f"{lo['big_images']['p50_ms']} / {lo['big_images']['p95_ms']}")]
        for phase in ("idle", "burst", "steady", "big_images"):
            h = lo[phase]["health"]
            rows.append((f"/health during {phase}: p50 / p95 / p99 / max ms",
                         f"{h['p50_ms']} / {h['p95_ms']} / {h['p99_ms']} / {h['max_ms']}"))
    m = report["machine"]
    lines = [f"# Reliability ({report['date']}, {m['cpu']}, {m['cores']} cores, commit {report['commit']})", "",
             "| figure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    ap.add_argument("--quick", action="store_true", help="a shorter load phase")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or None
    date = datetime.date.today().isoformat()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bildwerk-reliability-") as tmp:
        for part in parts:
            print(f"-- {part}", flush=True)
            if part == "corpus":
                results[part] = run_corpus()
            elif part == "fuzz":
                results[part] = run_pytest(["tests/server/test_fuzz.py"], "fuzz", Path(tmp) / "fuzz.jsonl")
            elif part == "faults":
                results[part] = run_pytest(["tests/server/test_faults.py"], "extended", Path(tmp) / "faults.jsonl",
                                           BILDWERK_FAULTS_DRAIN="20")  # the default drain
            elif part == "load":
                results[part] = run_load(args.quick)
    report = {"date": date, "commit": commit, "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
              "results": results}
    out = args.json or ROOT / "bench" / "results" / f"{date}-reliability.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    md = markdown(report)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
