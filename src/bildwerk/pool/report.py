"""A pool's report: what was made against the plan, why pictures were refused, how long it
took, how varied the result is, and a contact sheet per kind to look at.

:func:`write_report` reads a :class:`~bildwerk.pool.folder.PoolFolder` (its plan, manifest
rows and runs) and writes, each atomically::

    OUT/sheets/KIND.png   thumbnails of the kind's accepted pictures, captioned with the location
    OUT/report.json       every figure (the dict write_report returns); paths relative to OUT
    OUT/report.md         the same, short, for a person

Diversity per kind is the Vendi score of the accepted pictures' image embeddings (the
effective number of distinct pictures, 1 to n; :mod:`bildwerk.pool.diversity`) and their mean
pairwise cosine. The embeddings are efficientnet-lite0's pooled features, which are never
negative: two unrelated photos have a cosine of about 0.25, not 0, so the figures compare
pools and kinds with each other, not with an absolute scale.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from bildwerk.images.io import load_image_file, to_rgb
from bildwerk.pool.diversity import summary, usable
from bildwerk.pool.folder import ManifestRow, PoolFolder, _atomic_write
from bildwerk.pool.plan import slug

REPORT_VERSION = 1
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
SHEETS = "sheets"
MAX_SHEET_THUMBS = 256
MAX_COLUMNS = 64
THUMB_RANGE = (16, 512)
_BACKGROUND = (246, 246, 246)
_CELL = (255, 255, 255)
_TEXT = (40, 40, 40)
_PAD = 4


# ---------------------------------------------------------------------- contact sheets


# Captions are location names in the plan's language: DejaVu Sans (Latin, Greek, Cyrillic),
# where the system has it, else PIL's own default font (Latin only: other scripts show boxes).
_FONTS = ("DejaVuSans.ttf",)


def _font(size: int) -> Any:
    for name in _FONTS:
        try:
            return ImageFont.truetype(name, size)
        except (OSError, ImportError):
            continue
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: scalable
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_width(font: Any, text: str) -> float:
    try:
        return float(font.getlength(text))
    except Exception:
        box = font.getbbox(text)
        return float(box[2] - box[0])


def _fit_text(font: Any, text: str, width: int) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    text = " ".join(text.split())
    if _text_width(font, text) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if _text_width(font, text[:mid].rstrip() + "…") <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…" if lo else ""


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: Any) -> None:
    try:
        draw.text(xy, text, font=font, fill=_TEXT)
    except (UnicodeEncodeError, ValueError):  # a bitmap font without these characters
        draw.text(xy, text.encode("latin-1", "replace").decode("latin-1"), font=font, fill=_TEXT)


def _line_height(font: Any) -> int:
    box = font.getbbox("Ag")
    return int(box[3] - min(0, box[1])) + 2


def _thumbnail(path: Path, thumb: int) -> Image.Image | None:
    try:
        im = to_rgb(load_image_file(path, what="pool picture"))
    except Exception:  # a missing or unreadable file: a placeholder, the sheet still comes out
        return None
    if max(im.size) > thumb:  # the usual case: shrink, fast (reducing first) and aspect kept
        im.thumbnail((thumb, thumb), Image.Resampling.LANCZOS, reducing_gap=3.0)
        return im
    return ImageOps.contain(im, (thumb, thumb), Image.Resampling.LANCZOS)  # a small picture: enlarge


def sample_evenly(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``), first and
    last included."""
    if n <= k:
        return list(range(n))
    if k <= 1:
        return [0][:k]
    return sorted({int(round(i * (n - 1) / (k - 1))) for i in range(k)})


def contact_sheet(paths: Sequence[Path | str], labels: Sequence[str] | None = None, *, columns: int = 8,
                  thumb: int = 128, title: str | None = None) -> Image.Image | None:
    """A grid of thumbnails (``thumb`` px, aspect kept) with a caption each, in the order
    given; None for no pictures. More than 256 pictures are sampled evenly and the title says
    so. An unreadable file gets an empty, crossed cell."""
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(paths)} pictures but {len(labels)} labels")
    if not THUMB_RANGE[0] <= thumb <= THUMB_RANGE[1]:
        raise ValueError(f"thumb must be {THUMB_RANGE[0]}-{THUMB_RANGE[1]} px, got {thumb}")
    if not 1 <= columns <= MAX_COLUMNS:
        raise ValueError(f"columns must be 1-{MAX_COLUMNS}, got {columns}")
    n = len(paths)
    if n == 0:
        return None
    picked = sample_evenly(n, MAX_SHEET_THUMBS)
    if len(picked) < n:
        note = f"{len(picked)} of {n} shown, sampled evenly"
        title = f"{title} ({note})" if title else note
    font = _font(max(9, thumb // 12))
    title_font = _font(max(12, thumb // 8))
    line = _line_height(font) if labels is not None else 0
    cols = min(columns, len(picked))
    rows = math.ceil(len(picked) / cols)
    cell_w, cell_h = thumb, thumb + line
    head = _line_height(title_font) + 2 * _PAD if title else 0
    width = cols * (cell_w + _PAD) + _PAD
    sheet = Image.new("RGB", (width, head + rows * (cell_h + _PAD) + _PAD), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        _draw_text(draw, (_PAD, _PAD), _fit_text(title_font, title, width - 2 * _PAD), title_font)
    for slot, index in enumerate(picked):
        x = _PAD + (slot % cols) * (cell_w + _PAD)
        y = head + _PAD + (slot // cols) * (cell_h + _PAD)
        draw.rectangle((x, y, x + thumb - 1, y + thumb - 1), fill=_CELL)
        im = _thumbnail(Path(paths[index]), thumb)
        if im is None:
            draw.line((x, y, x + thumb - 1, y + thumb - 1), fill=(200, 60, 60), width=2)
            draw.line((x, y + thumb - 1, x + thumb - 1, y), fill=(200, 60, 60), width=2)
        else:
            sheet.paste(im, (x + (thumb - im.width) // 2, y + (thumb - im.height) // 2))
        if labels is not None:
            _draw_text(draw, (x, y + thumb + 1), _fit_text(font, str(labels[index]), thumb), font)
    return sheet


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# ---------------------------------------------------------------------- figures


def reason_key(reason: str | None) -> str:
    """The kind of a refusal or failure: its first word ("nsfw 0.93 >= 0.80" -> "nsfw",
    "near-duplicate of ab12 (cosine 0.985)" -> "near-duplicate", "invalid_request: ..." ->
    "invalid_request")."""
    words = (reason or "").split()
    return words[0].rstrip(":,;") if words else "unknown"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _runs(folder: PoolFolder, rows: list[ManifestRow]) -> list[dict[str, Any]]:
    """The runs with their durations; a run that never ended (killed, or still running) is
    taken to have ended with the last item that ended before the next run began."""
    runs = folder.runs()
    ends = sorted(r.ended for r in rows)
    out = []
    for i, run in enumerate(runs):
        started = float(run["started"])
        ended = run["ended"]
        estimated = ended is None
        if estimated:
            until = float(runs[i + 1]["started"]) if i + 1 < len(runs) else math.inf
            inside = [t for t in ends if started <= t < until]
            ended_at = max(inside) if inside else started
        else:
            ended_at = float(ended)
        out.append({"id": run["id"], "executor": run["executor"], "started": _iso(started),
                    "ended": _iso(None if estimated else ended_at), "seconds": round(max(0.0, ended_at - started), 3),
                    "estimated": estimated, "made": run["made"], "outcome": run["outcome"] or
                    ("unfinished" if estimated else None)})
    return out


def _embeddings(rows: list[ManifestRow]) -> np.ndarray | None:
    """The usable embeddings of some rows (those of the most common dimension, finite, nonzero)."""
    vecs = [r.embedding for r in rows if r.embedding is not None and r.embedding.size]
    if not vecs:
        return None
    dim = Counter(v.shape[0] for v in vecs).most_common(1)[0][0]
    x = np.stack([v for v in vecs if v.shape[0] == dim]).astype(np.float32)
    x = x[usable(x)]
    return x if len(x) else None


def _location_order(folder: PoolFolder, kind: str) -> dict[str, int]:
    try:
        return {loc.name: i for i, loc in enumerate(folder.plan.kind(kind).locations)}
    except Exception:
        return {}


def _sheet_name(kind: str, taken: set[str]) -> str:
    base = slug(kind)
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def build_report(folder: PoolFolder, *, sheets: dict[str, str] | None = None,
                 rows: list[ManifestRow] | None = None) -> dict[str, Any]:
    """Every figure of the report (what :func:`write_report` writes as report.json);
    ``rows``: the folder's manifest rows, when the caller has read them already."""
    plan = folder.plan
    rows = folder.rows() if rows is None else rows
    counts = folder.counts()
    gates = plan.gates
    by_kind: dict[str, list[ManifestRow]] = {}
    for r in rows:
        by_kind.setdefault(r.kind, []).append(r)
    plan_kinds = {k.kind: k for k in plan.kinds}
    kinds: dict[str, Any] = {}
    for kind in [*plan_kinds, *sorted(k for k in counts if k not in plan_kinds)]:
        c = counts.get(kind, Counter())
        krows = by_kind.get(kind, [])
        accepted = [r for r in krows if r.status == "accepted"]
        pk = plan_kinds.get(kind)
        target = pk.images if pk else 0
        per_location = Counter(r.location for r in accepted)
        planned_locations = [loc.name for loc in pk.locations] if pk else []
        order = {name: i for i, name in enumerate(planned_locations)}
        kinds[kind] = {
            "in_plan": pk is not None,
            "target": target,
            "planned": pk.planned if pk else 0,
            "accepted": c["accepted"],
            "rejected": c["rejected"],
            "failed": c["failed"],
            "missing": max(0, target - c["accepted"]),
            "rejected_by_reason": dict(Counter(reason_key(r.reason) for r in krows if r.status == "rejected")
                                       .most_common()),
            "failed_by_reason": dict(Counter(reason_key(r.reason) for r in krows if r.status == "failed")
                                     .most_common()),
            "locations": {
                "planned": len(planned_locations),
                "covered": sum(1 for name in per_location if name in order) if pk else len(per_location),
                "per_location": {name: per_location[name]
                                 for name in sorted(per_location, key=lambda n: (order.get(n, len(order)), n))},
            },
            "diversity": summary(_embeddings(accepted), gates.dedupe_threshold),
            "sheet": (sheets or {}).get(kind),
        }
    accepted_all = [r for r in rows if r.status == "accepted"]
    runs = _runs(folder, rows)
    seconds = sum(r["seconds"] for r in runs)
    hours = seconds / 3600.0
    made = [r for r in rows if r.status in ("accepted", "rejected")]
    item_seconds = sum(r.seconds for r in made)
    totals = {key: sum(k[key] for k in kinds.values()) for key in ("target", "accepted", "rejected", "failed")}
    totals["missing"] = sum(k["missing"] for k in kinds.values())
    examples: dict[str, list[str]] = {}
    for r in rows:
        if r.status in ("rejected", "failed") and r.reason:
            ex = examples.setdefault(f"{r.status}:{reason_key(r.reason)}", [])
            if len(ex) < 3 and r.reason not in ex:
                ex.append(r.reason)
    return {
        "version": REPORT_VERSION,
        "pool": plan.pool,
        "topic": plan.topic,
        "language": plan.language,
        "written": _iso(time.time()),
        "images": plan.images,
        "planned": plan.planned,
        "model": plan.settings.model,
        "gates": gates.model_dump(mode="json"),
        "totals": totals,
        "kinds": kinds,
        "reasons": examples,
        "time": {
            "runs": len(runs),
            "seconds": round(seconds, 3),
            "hours": round(hours, 4),
            "accepted_per_hour": round(totals["accepted"] / hours, 2) if hours > 0 else None,
            "pictures_per_hour": round(len(made) / hours, 2) if hours > 0 else None,
            "picture_seconds": round(item_seconds, 3),
            "seconds_per_picture": round(item_seconds / len(made), 3) if made else None,
            "estimated": any(r["estimated"] for r in runs),
        },
        "diversity": {"pool": summary(_embeddings(accepted_all))},
        "runs": runs,
        "sheets": dict(sheets or {}),
    }


# ---------------------------------------------------------------------- markdown


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return " ".join(str(value).split()).replace("|", "\\|")


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def _by_reason(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "–"


def render_markdown(report: dict[str, Any]) -> str:
    g = report["gates"]
    t = report["time"]
    tot = report["totals"]
    out = [f"# Pool report: {_cell(report['topic'])} (`{report['pool']}`)", ""]
    out.append(f"Written {report['written']}. Target {report['images']} pictures, {report['planned']} planned; "
               f"**{tot['accepted']} accepted**, {tot['rejected']} rejected, {tot['failed']} failed, "
               f"{tot['missing']} short of the target.")
    on = []
    if g.get("nsfw"):
        on.append(f"NSFW (refused at a score ≥ {g['nsfw_threshold']})")
    if g.get("dedupe"):
        on.append(f"near-duplicates within a kind (image-embedding cosine ≥ {g['dedupe_threshold']})")
    out.append("Gates: " + ("; ".join(on) if on else "none") +
               (f"; top-up {'on' if g.get('topup') else 'off'}." if "topup" in g else "."))
    out += ["", "## Kinds", "",
            "| kind | target | accepted | rejected | failed | missing | locations | Vendi | mean cosine |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, k in report["kinds"].items():
        loc = k["locations"]
        d = k["diversity"]
        out.append(f"| {_cell(name)}{'' if k['in_plan'] else ' (not in the plan)'} | {k['target']} | "
                   f"{k['accepted']} | {k['rejected']} | {k['failed']} | {k['missing']} | "
                   f"{loc['covered']} of {loc['planned']} | {_cell(d['vendi'])} | {_cell(d['mean_cosine'])} |")
    rejected = [(n, k) for n, k in report["kinds"].items() if k["rejected"] or k["failed"]]
    if rejected:
        out += ["", "## Rejected and failed", ""]
        for name, k in rejected:
            parts = []
            if k["rejected"]:
                parts.append(f"rejected {k['rejected']} ({_by_reason(k['rejected_by_reason'])})")
            if k["failed"]:
                parts.append(f"failed {k['failed']} ({_by_reason(k['failed_by_reason'])})")
            out.append(f"- **{_cell(name)}**: " + "; ".join(parts))
        if report["reasons"]:
            out += ["", "For example:", ""]
            for key, reasons in report["reasons"].items():
                for reason in reasons:
                    out.append(f"- {key.split(':', 1)[0]}: `{_cell(reason).replace('`', '')}`")
    out += ["", "## Time", ""]
    if t["runs"]:
        rate = (f", {t['accepted_per_hour']} accepted pictures an hour ({t['pictures_per_hour']} made)"
                if t["accepted_per_hour"] is not None else "")
        per = (f"; a picture took {t['seconds_per_picture']} s from its start to its end on average (pictures share "
               "batches, so this is latency, not cost)") if t["seconds_per_picture"] else ""
        est = " (a run that did not end is counted up to its last picture)" if t["estimated"] else ""
        out.append(f"{t['runs']} run{'s' if t['runs'] != 1 else ''}, {_duration(t['seconds'])}{rate}{per}{est}.")
    else:
        out.append("No runs recorded.")
    pool = report["diversity"]["pool"]
    out += ["", "## Diversity", "",
            "Vendi score: the effective number of distinct pictures among a kind's accepted ones (1 when "
            "all are alike, n when none share anything), from efficientnet-lite0 image embeddings; the mean "
            "pairwise cosine of the same (unrelated photos are about 0.25 with these features, copies above "
            "0.97).", "",
            "| kind | embedded | Vendi | Vendi per picture | mean cosine | pairs at the dedupe threshold |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, k in report["kinds"].items():
        d = k["diversity"]
        out.append(f"| {_cell(name)} | {d['embedded']} | {_cell(d['vendi'])} | {_cell(d['vendi_per_image'])} | "
                   f"{_cell(d['mean_cosine'])} | {_cell(d.get('near_duplicate_pairs'))} |")
    out.append(f"| all | {pool['embedded']} | {_cell(pool['vendi'])} | {_cell(pool['vendi_per_image'])} | "
               f"{_cell(pool['mean_cosine'])} | |")
    if report["sheets"]:
        out += ["", "## Contact sheets", ""]
        for name, path in report["sheets"].items():
            out += [f"### {_cell(name)}", "", f"![{_cell(name)}]({path})", ""]
    if report["runs"]:
        out += ["", "## Runs", "", "| # | executor | started | ended | duration | made | outcome |",
                "|---:|---|---|---|---:|---:|---|"]
        for r in report["runs"]:
            out.append(f"| {r['id']} | {_cell(r['executor'])} | {r['started']} | "
                       f"{r['ended'] or '(did not end)'} | {_duration(r['seconds'])} | {r['made']} | "
                       f"{_cell(r['outcome'])} |")
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------- writing


def write_sheets(folder: PoolFolder, *, columns: int = 8, thumb: int = 128,
                 rows: list[ManifestRow] | None = None) -> dict[str, str]:
    """sheets/KIND.png for every kind with accepted pictures, in plan location order;
    returns {kind: path relative to the folder}."""
    accepted = [r for r in (folder.rows() if rows is None else rows) if r.status == "accepted"]
    kinds = [k.kind for k in folder.plan.kinds]
    kinds += sorted({r.kind for r in accepted} - set(kinds))
    out: dict[str, str] = {}
    taken: set[str] = set()
    for kind in kinds:
        krows = [r for r in accepted if r.kind == kind and r.file]
        if not krows:
            continue
        order = _location_order(folder, kind)
        krows.sort(key=lambda r: (order.get(r.location, len(order)), r.location, r.prompt_index, r.seed))
        title = f"{folder.plan.topic} - {kind}: {len(krows)} accepted"
        sheet = contact_sheet([folder.root / str(r.file) for r in krows], [r.location for r in krows],
                              columns=columns, thumb=thumb, title=title)
        if sheet is None:
            continue
        rel = Path(SHEETS) / f"{_sheet_name(kind, taken)}.png"
        _atomic_write(folder.root / rel, _png(sheet))
        out[kind] = rel.as_posix()
    return out


def write_report(folder: PoolFolder, *, sheets: bool = True, columns: int = 8, thumb: int = 128) -> dict[str, Any]:
    """Write the contact sheets, report.json and report.md into the folder; returns the report."""
    rows = folder.rows()
    written = write_sheets(folder, columns=columns, thumb=thumb, rows=rows) if sheets else {}
    report = build_report(folder, sheets=written, rows=rows)
    _atomic_write(folder.root / REPORT_JSON,
                  (json.dumps(report, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    _atomic_write(folder.root / REPORT_MD, render_markdown(report).encode("utf-8"))
    return report
