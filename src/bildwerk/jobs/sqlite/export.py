"""Export of succeeded jobs as an imagefolder that ``bildwerk train`` accepts."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bildwerk.core.errors import InvalidRequestError
from bildwerk.jobs.sqlite.blobs import Blobs
from bildwerk.jobs.sqlite.errors import ExportError
from bildwerk.jobs.sqlite.rows import INPUT_ROLES, JOB_COLUMNS, JobRow, chunks
from bildwerk.jobs.sqlite.search import MAX_JOB_IDS, Search

_LANG_RE = re.compile(r"[a-z]{2,3}")
# A job's inputs by role (job_inputs) and the metadata.csv column that names each one's file.
_INPUT_COLUMNS = {role: f"input_{role}" for role in INPUT_ROLES}
_FILTERS = frozenset({"text", "model", "api", "mode", "since", "until", "pool_id"})


class Export(Search, Blobs):
    def export(
        self, job_ids: Sequence[str] | None, out_dir: str | os.PathLike[str], **filters: Any
    ) -> Path:
        """Write succeeded jobs' results as an imagefolder ``bildwerk train`` accepts.

        ``images/<job>_<idx>.png`` plus ``metadata.csv`` (file_name, text, seed, model,
        job_id, and text_<lang> with the user's original words for non-English prompts).
        A job's input picture and mask, when it had them, are ``inputs/<job>_image.png`` and
        ``inputs/<job>_mask.png`` (ControlNet pictures ``inputs/<job>_control0.png``...), named in
        each of its rows' ``input_image`` / ``input_mask`` / ``input_control0``...
        (outside images/ and not file_name: they are what the visitor gave, not captions'
        pictures, so training does not take them).
        ``job_ids`` selects jobs (unknown ids raise JobNotFoundError; ones not succeeded
        are skipped); ``filters`` are list_jobs' (text, model, api, mode, since, until).
        Jobs without a prompt are skipped (a caption is required). Refuses a non-empty
        ``out_dir``. metadata.csv is written last, so a broken export is recognisable.
        """
        out = Path(out_dir)
        if "status" in filters:
            raise InvalidRequestError("export takes succeeded jobs only; no status filter")
        unknown = sorted(set(filters) - _FILTERS)
        if unknown:
            raise TypeError(f"export() got unexpected filter(s): {', '.join(unknown)}")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ExportError(
                f"{out} is not an empty folder; export into a new or empty folder "
                "so nothing is mixed in or overwritten"
            )
        rows, languages, copies = _metadata(self._succeeded(job_ids, filters))
        if not rows:
            raise ExportError("nothing to export: no succeeded job with results matches")

        (out / "images").mkdir(parents=True, exist_ok=True)
        if any(name.startswith("inputs/") for name, _ in copies):
            (out / "inputs").mkdir()
        for name, sha256 in copies:
            (out / name).write_bytes(self.read_image(sha256))  # hash-verified copy
        columns = ["file_name", "text", "seed", "model", "job_id"]
        columns += [c for c in _INPUT_COLUMNS.values() if any(c in r for r in rows)]
        columns += [f"text_{lang}" for lang in sorted(languages)]
        tmp = out / ".metadata.csv.tmp"
        with tmp.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, out / "metadata.csv")
        return out

    def _succeeded(self, job_ids: Sequence[str] | None, filters: dict[str, Any]) -> list[JobRow]:
        """The succeeded jobs export takes, oldest first, in one read snapshot."""
        ids = list(dict.fromkeys(job_ids)) if job_ids is not None else None
        if ids is not None and len(ids) > MAX_JOB_IDS:
            raise InvalidRequestError(f"at most {MAX_JOB_IDS} job ids at once, got {len(ids)}")
        jobs: list[JobRow] = []
        with self.transaction(write=False) as conn:
            if ids is not None:  # whole ids or unique starts of them (what a listing shows)
                ids = list(dict.fromkeys(self._resolve_ids(conn, ids)))
            for chunk in chunks(ids) if ids is not None else [None]:
                where, params = self._where(status="succeeded", job_ids=chunk, **filters)
                jobs += self._rows(
                    conn,
                    conn.execute(
                        f"SELECT {JOB_COLUMNS} FROM jobs{where} ORDER BY created_at, rowid",
                        params,
                    ),
                )
        return jobs


def _metadata(
    jobs: list[JobRow],
) -> tuple[list[dict[str, str]], set[str], list[tuple[str, str]]]:
    """metadata.csv rows, the languages with a text_<lang> column, (file name, sha256)."""
    rows: list[dict[str, str]] = []
    languages: set[str] = set()
    copies: list[tuple[str, str]] = []
    for job in jobs:
        text = job.prompt.strip()
        if not text or not job.results:
            continue
        lang = job.language if job.language and _LANG_RE.fullmatch(job.language) else None
        original = (job.original_prompt or "").strip()
        model = job.model or ""
        record_model = (job.record or {}).get("model")
        if isinstance(record_model, dict) and isinstance(record_model.get("name"), str):
            model = record_model["name"]  # the model that actually ran
        inputs = {}
        for role, column in _INPUT_COLUMNS.items():
            if role in job.inputs:
                inputs[column] = f"inputs/{job.id}_{role}.png"
                copies.append((inputs[column], job.inputs[role]))
        for result in job.results:
            name = f"images/{job.id}_{result.idx}.png"
            row = {
                "file_name": name,
                "text": text,
                "seed": "" if result.seed is None else str(result.seed),
                "model": model,
                "job_id": job.id,
                **inputs,
            }
            if lang and lang != "en" and original:
                row[f"text_{lang}"] = original
                languages.add(lang)
            rows.append(row)
            copies.append((name, result.sha256))
    return rows, languages, copies
