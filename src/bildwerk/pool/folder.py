"""A pool's output folder and its manifest: what is made, what was rejected and why.

    OUT/plan.yaml           the plan this folder was made from (kept; a different plan is refused)
    OUT/manifest.sqlite     one row per item that ended: accepted, rejected or failed
    OUT/images/KIND/ID.png  accepted pictures (PNG with the full record inside)
    OUT/rejected/KIND/ID.png  pictures a gate refused, kept aside with the reason in the manifest
    OUT/metadata.csv        the imagefolder format ``bildwerk train`` reads (accepted images)
    OUT/sheets/KIND.png, OUT/report.json, OUT/report.md   written by report.py

A picture's file is written (temp file, fsync, rename) before its row commits, so a killed
run leaves at most a file without a row, which the resumed run makes again, identically,
under the same name: nothing is lost and nothing exists twice. Items are keyed by their
deterministic id (plan.py), so every executor and every resume agree on what is done.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bildwerk.core.errors import InvalidRequestError
from bildwerk.pool.plan import PoolItem, PoolPlan, slug

MANIFEST = "manifest.sqlite"
PLAN_FILE = "plan.yaml"
METADATA = "metadata.csv"
METADATA_COLUMNS = ["file_name", "text", "topic", "kind", "location", "prompt", "seed", "model", "id"]
ENDED = ("accepted", "rejected", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    location TEXT NOT NULL,
    prompt_index INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    original TEXT,
    model_prompt TEXT,
    status TEXT NOT NULL CHECK (status IN ('accepted', 'rejected', 'failed')),
    reason TEXT,
    file TEXT,
    model TEXT,
    scores TEXT NOT NULL DEFAULT '{}',
    embedding BLOB,
    seconds REAL NOT NULL DEFAULT 0,
    executor TEXT,
    ended REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_kind ON items (kind, status);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    executor TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    made INTEGER NOT NULL DEFAULT 0,
    outcome TEXT
);
"""


@dataclass
class ManifestRow:
    id: str
    kind: str
    location: str
    prompt_index: int
    seed: int
    prompt: str
    original: str | None
    model_prompt: str | None
    status: str
    reason: str | None
    file: str | None
    model: str | None
    scores: dict[str, Any]
    embedding: np.ndarray | None
    seconds: float
    executor: str | None
    ended: float


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class PoolFolder:
    """The folder of one pool; thread-safe (one connection, one lock)."""

    def __init__(self, root: str | os.PathLike[str], plan: PoolPlan | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        stored = self.root / PLAN_FILE
        if plan is None:
            if not stored.is_file():
                raise InvalidRequestError(f"{self.root} holds no pool (no {PLAN_FILE}); run a plan into it first")
            plan = PoolPlan.load(stored)
        elif stored.is_file():
            kept = PoolPlan.load(stored)
            if kept.pool != plan.pool:
                raise InvalidRequestError(
                    f"{self.root} holds the pool {kept.pool!r}, not {plan.pool!r}; choose another --out")
            if kept.dump() != plan.dump():
                plan.save(stored)  # an edited plan: ids of unchanged prompts stay, done work is kept
        else:
            plan.save(stored)
        self.plan = plan
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / MANIFEST, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> PoolFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def _insert(self, item: PoolItem, status: str, *, reason: str | None = None, file: str | None = None,
                model: str | None = None, model_prompt: str | None = None, scores: dict[str, Any] | None = None,
                embedding: np.ndarray | None = None, seconds: float = 0.0, executor: str | None = None) -> None:
        blob = None if embedding is None else np.asarray(embedding, dtype=np.float32).tobytes()
        with self._lock:
            # A failed item that is made later replaces its failure; an ended picture is never redone.
            self._db.execute(
                "INSERT INTO items (id, kind, location, prompt_index, seed, prompt, original, model_prompt,"
                " status, reason, file, model, scores, embedding, seconds, executor, ended)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(id) DO UPDATE SET status=excluded.status, reason=excluded.reason,"
                " file=excluded.file, model=excluded.model, model_prompt=excluded.model_prompt,"
                " scores=excluded.scores, embedding=excluded.embedding, seconds=excluded.seconds,"
                " executor=excluded.executor, ended=excluded.ended WHERE items.status = 'failed'",
                (item.id, item.kind, item.location, item.prompt_index, item.seed, item.prompt, item.original,
                 model_prompt, status, reason, file, model, json.dumps(scores or {}), blob, float(seconds),
                 executor, time.time()))

    def accept(self, item: PoolItem, png: bytes, *, model: str | None = None, model_prompt: str | None = None,
               scores: dict[str, Any] | None = None, embedding: np.ndarray | None = None,
               seconds: float = 0.0, executor: str | None = None) -> Path:
        rel = Path("images") / _safe(item.kind) / f"{item.id}.png"
        _atomic_write(self.root / rel, png)
        self._insert(item, "accepted", file=rel.as_posix(), model=model, model_prompt=model_prompt,
                     scores=scores, embedding=embedding, seconds=seconds, executor=executor)
        return self.root / rel

    def reject(self, item: PoolItem, png: bytes, reason: str, *, model: str | None = None,
               model_prompt: str | None = None, scores: dict[str, Any] | None = None,
               embedding: np.ndarray | None = None, seconds: float = 0.0, executor: str | None = None) -> Path:
        rel = Path("rejected") / _safe(item.kind) / f"{item.id}.png"
        _atomic_write(self.root / rel, png)
        self._insert(item, "rejected", reason=reason, file=rel.as_posix(), model=model,
                     model_prompt=model_prompt, scores=scores, embedding=embedding, seconds=seconds,
                     executor=executor)
        return self.root / rel

    def fail(self, item: PoolItem, reason: str, *, executor: str | None = None) -> None:
        self._insert(item, "failed", reason=reason, executor=executor)

    # ------------------------------------------------------------------ runs

    def begin_run(self, executor: str) -> int:
        with self._lock:
            cur = self._db.execute("INSERT INTO runs (executor, started) VALUES (?, ?)", (executor, time.time()))
            return int(cur.lastrowid or 0)

    def end_run(self, run_id: int, made: int, outcome: str) -> None:
        with self._lock:
            self._db.execute("UPDATE runs SET ended = ?, made = ?, outcome = ? WHERE id = ?",
                             (time.time(), int(made), outcome, run_id))

    def runs(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT id, executor, started, ended, made, outcome FROM runs ORDER BY id")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # ------------------------------------------------------------------ reading

    def ended_ids(self) -> set[str]:
        """Items that need no more work: accepted or rejected (failed ones are tried again)."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM items WHERE status != 'failed'")}

    @staticmethod
    def _filters(status: str | None, kind: str | None, location: str | None) -> tuple[str, list[Any]]:
        q, args = " WHERE 1=1", []
        for column, value in (("status", status), ("kind", kind), ("location", location)):
            if value is not None:
                q, args = q + f" AND {column} = ?", [*args, value]
        return q, args

    def rows(self, *, status: str | None = None, kind: str | None = None, location: str | None = None,
             limit: int | None = None, offset: int = 0) -> list[ManifestRow]:
        where, args = self._filters(status, kind, location)
        page = "" if limit is None else " LIMIT ? OFFSET ?"
        with self._lock:
            cur = self._db.execute("SELECT * FROM items" + where + " ORDER BY ended, id" + page,
                                   args if limit is None else [*args, int(limit), int(offset)])
            names = [d[0] for d in cur.description]
            raw = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        out = []
        for r in raw:
            r["scores"] = json.loads(r["scores"] or "{}")
            r["embedding"] = None if r["embedding"] is None else np.frombuffer(r["embedding"], dtype=np.float32)
            out.append(ManifestRow(**r))
        return out

    def count(self, *, status: str | None = None, kind: str | None = None, location: str | None = None) -> int:
        where, args = self._filters(status, kind, location)
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM items" + where, args).fetchone()[0])

    def counts(self) -> dict[str, Counter[str]]:
        """Per kind: how many items are accepted, rejected, failed."""
        out: dict[str, Counter[str]] = {k.kind: Counter() for k in self.plan.kinds}
        with self._lock:
            for kind, status, n in self._db.execute("SELECT kind, status, COUNT(*) FROM items GROUP BY kind, status"):
                out.setdefault(kind, Counter())[status] = n
        return out

    def accepted(self) -> Counter[str]:
        return Counter({k: c["accepted"] for k, c in self.counts().items()})

    def embeddings(self, kind: str) -> np.ndarray | None:
        """The image embeddings of a kind's accepted pictures (what the duplicate gate compares with)."""
        vecs = [r.embedding for r in self.rows(status="accepted", kind=kind) if r.embedding is not None]
        return np.stack(vecs) if vecs else None

    # ------------------------------------------------------------------ metadata.csv

    def metadata_rows(self) -> list[dict[str, Any]]:
        rows = []
        for r in self.rows(status="accepted"):
            rows.append({"file_name": r.file, "text": r.prompt, "topic": self.plan.topic, "kind": r.kind,
                         "location": r.location, "prompt": r.model_prompt or r.prompt, "seed": r.seed,
                         "model": r.model or "", "id": r.id})
        return rows

    def write_metadata(self) -> Path:
        """metadata.csv of the accepted pictures, in the order they were made (atomic)."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METADATA_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(self.metadata_rows())
        path = self.root / METADATA
        _atomic_write(path, buf.getvalue().encode("utf-8"))
        return path


def _safe(kind: str) -> str:
    return slug(kind)  # a kind's folder name: any script, no path characters


def needed(plan: PoolPlan, accepted: Iterable[tuple[str, int]] | dict[str, int]) -> dict[str, int]:
    """Per kind: how many more accepted pictures reach its target."""
    have = dict(accepted)
    return {k.kind: max(0, k.images - have.get(k.kind, 0)) for k in plan.kinds}
