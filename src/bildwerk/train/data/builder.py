"""``build_dataset``: sources -> normalised, de-duplicated, split imagefolder on disk.

Output (HuggingFace "imagefolder" convention)::

    out_dir/
      images/<stable_id>.png   normalised pictures (white square, size x size)
      metadata.csv             file_name,text,split,source,licence,text_de,text_fr,text_ko,text_ru,source_ids
      captions.jsonl           every caption in every language, alternatives included
      dataset_card.md          what is inside, where it came from, licences, counts
      build_info.json          parameters, package versions, tool versions, counts
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import re
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import PIL
from pydantic import BaseModel, Field

from .card import write_dataset_card
from .dedupe import (
    DEFAULT_MAX_DISTANCE,
    DEFAULT_MAX_MEAN_DIFF,
    DEFAULT_MAX_PIXEL_DIFF,
    UnionFind,
    find_duplicates,
)
from .emoji import EmojiSource
from .errors import DatasetError
from .fetch import default_cache_dir
from .imaging import (
    DEFAULT_MARGIN,
    ImageFingerprint,
    fingerprint,
    is_blank,
    load_raw_image,
    normalize_image,
)
from .openclipart import OpenClipartSource
from .records import CSV_LANGUAGES, Source, SourceInfo, SourceRecord
from .svg import find_rsvg_convert

log = logging.getLogger(__name__)

# progress(stage, done, total): stage is e.g. "fetch tuxpaint", "normalise", "write".
ProgressFn = Callable[[str, int, int | None], None]

METADATA_COLUMNS: tuple[str, ...] = (
    "file_name",
    "text",
    "split",
    "source",
    "licence",
    *(f"text_{lang}" for lang in CSV_LANGUAGES if lang != "en"),
    "source_ids",
)
_MARKER = ".bildwerk-dataset"
_OUTPUTS = ("images", "metadata.csv", "captions.jsonl", "dataset_card.md", "build_info.json")


def _source_factories() -> dict[str, Callable[[], Source]]:
    from .tuxpaint import TuxPaintSource

    return {"tuxpaint": TuxPaintSource, "openclipart": OpenClipartSource, "emoji": EmojiSource}


def available_sources() -> list[str]:
    return list(_source_factories())


def resolve_source(spec: str | Source) -> Source:
    """A source name ("tuxpaint") or an adapter instance (e.g. with a local root)."""
    if isinstance(spec, str):
        factories = _source_factories()
        if spec not in factories:
            raise DatasetError(f"unknown source {spec!r}; choose from {', '.join(factories)}")
        return factories[spec]()
    if isinstance(spec, Source):
        return spec
    raise DatasetError(f"not a source: {spec!r}")


# --- summary models -----------------------------------------------------------------


class SourceCounts(BaseModel):
    records: int = 0  # captioned pictures the source listed
    failed: int = 0  # could not be read or rendered
    images: int = 0  # output images whose picture comes from this source
    merged: int = 0  # records folded into another image as a duplicate
    train: int = 0
    test: int = 0


class SourceDescription(BaseModel):
    name: str
    package: str
    registry: str
    version: str
    licence: str
    archive_sha256: str | None = None
    notes: str = ""


class DatasetSummary(BaseModel):
    out_dir: Path
    size: int
    seed: int
    test_fraction: float
    images: int = 0
    splits: dict[str, int] = Field(default_factory=dict)
    per_source: dict[str, SourceCounts] = Field(default_factory=dict)
    # images with a caption in each metadata.csv language, overall and per split
    per_language: dict[str, int] = Field(default_factory=dict)
    per_language_split: dict[str, dict[str, int]] = Field(default_factory=dict)
    exact_duplicates: int = 0
    near_max_hamming: int = DEFAULT_MAX_DISTANCE
    near_max_thumb_diff: int = DEFAULT_MAX_PIXEL_DIFF
    near_max_mean_diff: float = DEFAULT_MAX_MEAN_DIFF
    near_duplicates: int = 0
    failures: list[str] = Field(default_factory=list)
    sources: list[SourceDescription] = Field(default_factory=list)
    svg_renderer: str | None = None
    elapsed_s: float = 0.0


# --- worker -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    index: int
    path: str
    out_path: str
    size: int
    svg_binary: str | None


@dataclass
class _Result:
    index: int
    error: str | None = None
    raw_size: tuple[int, int] = (0, 0)
    print_: ImageFingerprint | None = None


def _process(task: _Task) -> _Result:
    """Load, normalise, save and fingerprint one picture (runs in a worker process)."""
    try:
        raw = load_raw_image(Path(task.path), svg_binary=task.svg_binary, svg_box=max(512, 4 * task.size))
        norm = normalize_image(raw, task.size, margin=DEFAULT_MARGIN)
        if is_blank(norm):
            return _Result(task.index, "blank: nothing shows on a white background")
        norm.save(task.out_path, format="PNG", optimize=False, compress_level=6)
        return _Result(task.index, None, raw.size, fingerprint(norm))
    except Exception as exc:  # one bad file must not stop a 12k-image build
        return _Result(task.index, f"{type(exc).__name__}: {exc}")


def _run_tasks(
    tasks: list[_Task], workers: int, progress: ProgressFn | None
) -> list[_Result]:
    results: list[_Result] = []
    total = len(tasks)
    if workers <= 1 or total < 64:
        for t in tasks:
            results.append(_process(t))
            if progress:
                progress("normalise", len(results), total)
        return results
    # fork: no re-import of the caller's __main__; the worker only touches PIL and numpy.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for res in pool.map(_process, tasks, chunksize=8):
            results.append(res)
            if progress:
                progress("normalise", len(results), total)
    return results


# --- helpers ------------------------------------------------------------------------


def _slug(text: str, limit: int = 32) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].strip("-") or "x"


def stable_id(record: SourceRecord) -> str:
    """File stem that depends only on the record's source id: stable across builds."""
    digest = hashlib.sha1(record.source_id.encode("utf-8")).hexdigest()[:10]
    name = record.source_id.split(":", 1)[-1].rsplit("/", 1)[-1]
    return f"{record.source}-{_slug(Path(name).stem)}-{digest}"


def split_unit(seed: int, key: str) -> float:
    """Uniform number in [0, 1) fixed by seed and key: adding sources moves no other group."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not ((out / _MARKER).exists() or (out / "build_info.json").exists()):
            raise DatasetError(
                f"{out} is not empty and was not made by `bildwerk data`; choose an empty folder"
            )
        for name in _OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("made by bildwerk data; safe to rebuild in place\n", encoding="utf-8")


@dataclass
class _Image:
    """One output image: a cluster of unique raw files and all their records."""

    item: int  # representative unique-file index
    items: list[int]
    records: list[SourceRecord]
    captions: dict[str, list[str]] = field(default_factory=dict)
    split: str = "train"


def _merge_captions(records: Sequence[SourceRecord]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for rec in records:
        for lang, text in rec.captions.items():
            if text and text not in merged.setdefault(lang, []):
                merged[lang].append(text)
    for rec in records:
        for lang, alts in rec.alt_captions.items():
            for text in alts:
                if text and text not in merged.setdefault(lang, []):
                    merged[lang].append(text)
    return {lang: texts for lang, texts in merged.items() if texts}


def _licence_of(records: Iterable[SourceRecord]) -> str:
    return " AND ".join(dict.fromkeys(r.licence for r in records))


# --- the build ----------------------------------------------------------------------


def build_dataset(
    out_dir: str | Path,
    *,
    sources: Sequence[str | Source] = ("tuxpaint", "openclipart", "emoji"),
    size: int = 128,
    seed: int = 0,
    test_fraction: float = 0.05,
    cache_dir: str | Path | None = None,
    limit_per_source: int | None = None,
    progress: ProgressFn | None = None,
    workers: int | None = None,
) -> DatasetSummary:
    """Fetch the sources, normalise, de-duplicate, split and write an imagefolder.

    ``sources`` are names ("tuxpaint", "openclipart", "emoji") or adapter instances
    (``TuxPaintSource(root=...)`` reads an already extracted tree, no download).
    Earlier sources win when duplicates are merged: their picture and captions come
    first. ``limit_per_source`` keeps the first N records of each source (in source-id
    order), for quick trial builds. ``progress(stage, done, total)`` is called as work
    advances. Raises ``SourceUnavailableError`` when a source cannot be fetched.
    """
    started = time.monotonic()
    if not 8 <= size <= 4096:
        raise DatasetError(f"size must be between 8 and 4096, got {size}")
    if not 0.0 <= test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if not sources:
        raise DatasetError("no sources given")
    out = Path(out_dir).expanduser().resolve()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    adapters = [resolve_source(s) for s in sources]
    names = [a.name for a in adapters]
    if len(set(names)) != len(names):
        raise DatasetError(f"a source is listed twice: {names}")
    workers = workers or min(os.cpu_count() or 1, 8)

    # 1. fetch and list
    infos: list[SourceInfo] = []
    records: list[SourceRecord] = []
    summary = DatasetSummary(out_dir=out, size=size, seed=seed, test_fraction=test_fraction)
    for adapter in adapters:
        if progress:
            progress(f"fetch {adapter.name}", 0, 1)
        info = adapter.fetch(cache)
        infos.append(info)
        try:
            found = sorted(adapter.iter_records(info.root), key=lambda r: r.source_id)
        except FileNotFoundError as exc:  # a local root that is not the package's tree
            raise DatasetError(f"source {adapter.name}: {exc}") from exc
        if limit_per_source is not None:
            found = found[: max(0, limit_per_source)]
        records.extend(found)
        summary.per_source[adapter.name] = SourceCounts(records=len(found))
        if progress:
            progress(f"fetch {adapter.name}", 1, 1)
    summary.sources = [
        SourceDescription(
            name=i.name, package=i.package, registry=i.registry, version=i.version,
            licence=i.licence, archive_sha256=i.archive_sha256, notes=i.notes,
        )
        for i in infos
    ]
    if not records:
        raise DatasetError("the sources listed no captioned pictures")

    # 2. SVG renderer, only when some picture needs it
    svg_binary: str | None = None
    if any(r.path.suffix.lower() == ".svg" for r in records):
        found_rsvg = find_rsvg_convert(cache)
        if found_rsvg:
            svg_binary, summary.svg_renderer = found_rsvg
        else:
            log.warning("rsvg-convert unavailable (apt-get install librsvg2-bin): SVG stamps skipped")

    # 3. normalise each distinct raw file once (symlinks point several records at one file)
    _prepare_out_dir(out)
    source_rank = {name: i for i, name in enumerate(names)}
    records.sort(key=lambda r: (source_rank[r.source], r.source_id))
    item_of_path: dict[Path, int] = {}
    item_records: list[list[SourceRecord]] = []
    for rec in records:
        idx = item_of_path.setdefault(rec.path, len(item_records))
        if idx == len(item_records):
            item_records.append([])
        item_records[idx].append(rec)
    tasks = [
        _Task(i, str(recs[0].path), str(out / "images" / f"{stable_id(recs[0])}.png"), size, svg_binary)
        for i, recs in enumerate(item_records)
    ]
    results = _run_tasks(tasks, workers, progress)
    ok_items = [r.index for r in results if r.error is None and r.print_ is not None]
    for res in results:
        if res.error is not None:
            for rec in item_records[res.index]:
                summary.per_source[rec.source].failed += 1
            summary.failures.append(f"{item_records[res.index][0].source_id}: {res.error}")
    if not ok_items:
        raise DatasetError("no picture could be read: " + "; ".join(summary.failures[:5]))
    by_index = {r.index: r for r in results}

    # 4. de-duplicate
    if progress:
        progress("dedupe", 0, 1)
    prints = [by_index[i].print_ for i in ok_items]
    dedupe = find_duplicates(
        prints,  # type: ignore[arg-type]
        max_distance=DEFAULT_MAX_DISTANCE,
        max_pixel_diff=DEFAULT_MAX_PIXEL_DIFF,
        max_mean_diff=DEFAULT_MAX_MEAN_DIFF,
    )
    summary.exact_duplicates = dedupe.exact_links
    summary.near_duplicates = dedupe.near_links
    def rank(item: int) -> tuple[int, int, str]:
        # Earlier source first, then the larger original, then a fixed tie-break.
        rec = item_records[item][0]
        w, h = by_index[item].raw_size
        return (source_rank[rec.source], -(w * h), rec.source_id)

    images: list[_Image] = []
    for cluster in dedupe.clusters:
        items = sorted((ok_items[c] for c in cluster), key=rank)
        rep = items[0]
        recs = list(item_records[rep]) + [
            r for it in sorted(items[1:], key=rank) for r in item_records[it]
        ]
        images.append(_Image(item=rep, items=items, records=recs, captions=_merge_captions(recs)))
    if progress:
        progress("dedupe", 1, 1)

    # 5. split by connected group: duplicates and same-picture variants stay together
    uf = UnionFind(len(images))
    first_with_key: dict[str, int] = {}
    for i, img in enumerate(images):
        for rec in img.records:
            uf.union(first_with_key.setdefault(rec.group_key, i), i)
    components: dict[int, list[int]] = defaultdict(list)
    for i in range(len(images)):
        components[uf.find(i)].append(i)
    comp_keys = {
        root: min(rec.group_key for i in members for rec in images[i].records)
        for root, members in components.items()
    }
    test_roots = {root for root, key in comp_keys.items() if split_unit(seed, key) < test_fraction}
    if test_fraction > 0 and not test_roots and len(components) > 1:
        # Tiny builds: still hold out one group rather than none.
        test_roots = {min(comp_keys, key=lambda r: split_unit(seed, comp_keys[r]))}
    for root, members in components.items():
        for i in members:
            images[i].split = "test" if root in test_roots else "train"

    # 6. write
    keep = {img.item for img in images}
    for item in ok_items:
        if item not in keep:
            Path(tasks[item].out_path).unlink(missing_ok=True)
    images.sort(key=lambda img: Path(tasks[img.item].out_path).name)
    rows: list[dict[str, str]] = []
    lang_counts: Counter[str] = Counter()
    lang_split: dict[str, Counter[str]] = defaultdict(Counter)
    with (out / "captions.jsonl").open("w", encoding="utf-8") as jf:
        for n, img in enumerate(images, 1):
            rep_rec = item_records[img.item][0]
            file_name = f"images/{Path(tasks[img.item].out_path).name}"
            row = {
                "file_name": file_name,
                "text": img.captions.get("en", [""])[0],
                "split": img.split,
                "source": rep_rec.source,
                "licence": _licence_of(img.records),
                "source_ids": ";".join(r.source_id for r in img.records),
            }
            for lang in CSV_LANGUAGES:
                if lang != "en":
                    row[f"text_{lang}"] = img.captions.get(lang, [""])[0]
                if img.captions.get(lang):
                    lang_counts[lang] += 1
                    lang_split[img.split][lang] += 1
            rows.append(row)
            counts = summary.per_source[rep_rec.source]
            counts.images += 1
            setattr(counts, img.split, getattr(counts, img.split) + 1)
            for rec in img.records[1:]:
                summary.per_source[rec.source].merged += 1
            jf.write(
                json.dumps(
                    {"file_name": file_name, "split": img.split, "captions": img.captions,
                     "source_ids": [r.source_id for r in img.records],
                     "group_keys": sorted({r.group_key for r in img.records})},
                    ensure_ascii=False,
                )
                + "\n"
            )
            if progress:
                progress("write", n, len(images))
    with (out / "metadata.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(METADATA_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    summary.images = len(images)
    summary.splits = dict(sorted(Counter(img.split for img in images).items()))
    summary.per_language = {lang: lang_counts.get(lang, 0) for lang in CSV_LANGUAGES}
    summary.per_language_split = {
        split: {lang: lang_split[split].get(lang, 0) for lang in CSV_LANGUAGES}
        for split in sorted(lang_split)
    }
    summary.elapsed_s = round(time.monotonic() - started, 2)
    write_dataset_card(out / "dataset_card.md", summary)
    info = {
        "format": "imagefolder",
        "builder": "bildwerk.train.data.build_dataset",
        "bildwerk_version": _bildwerk_version(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": {
            "sources": names, "size": size, "seed": seed, "test_fraction": test_fraction,
            "limit_per_source": limit_per_source, "margin": DEFAULT_MARGIN,
            "near_duplicate_max_hamming": DEFAULT_MAX_DISTANCE,
            "near_duplicate_max_thumbnail_diff": DEFAULT_MAX_PIXEL_DIFF,
            "near_duplicate_max_mean_diff": DEFAULT_MAX_MEAN_DIFF,
        },
        "tools": {
            "python": platform.python_version(), "pillow": PIL.__version__,
            "numpy": np.__version__, "rsvg-convert": summary.svg_renderer,
        },
        "summary": json.loads(summary.model_dump_json()),
    }
    (out / "build_info.json").write_text(
        json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return summary


def _bildwerk_version() -> str:
    try:
        from bildwerk import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"


__all__ = [
    "METADATA_COLUMNS",
    "DatasetSummary",
    "ProgressFn",
    "SourceCounts",
    "SourceDescription",
    "available_sources",
    "build_dataset",
    "resolve_source",
    "split_unit",
    "stable_id",
]
