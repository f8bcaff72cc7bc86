"""Judge-based quality: does the model draw the object its caption names, in every language?

For the held-out rows whose English caption names ImageNet classes
(:func:`~bildwerk.evaluation.rows.select_rows`), :func:`evaluate`

1. generates pictures from the English, German and Korean captions of those
   rows, with the same seeds in every language so only the words differ, and
   judges them,
2. judges the real held-out pictures (the ceiling a generator can be held to),
   first scaled down to the generated size if they are larger,
3. counts a picture correct at top-k when one of the judge's k best classes is
   among the caption's accepted classes.

A row without a caption in a language is skipped for that language and counted.
Every per-language figure (real accuracy, the generated/real ratio, the gap to
English) is computed on the rows that have a caption in that language, so the
comparison is always like for like.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from bildwerk.evaluation.rows import EvalRow, count_split, select_rows
from bildwerk.images.io import DATASET_LIMITS, load_image_file, to_rgb
from bildwerk.models.imagenet.classifier import Judge
from bildwerk.models.imagenet.labels import class_label

# The targets: generated pictures judged correct at least half as often as the
# real ones (top-5), and each other language within 15 points of English.
TARGET_RATIO = 0.5
TARGET_GAP_POINTS = 15.0
MAX_IMAGES_PER_REQUEST = 8  # bildwerk.core.request.MAX_IMAGES
REAL_CHUNK = 256  # real pictures loaded and judged at a time: bounded memory on big splits

Progress = Callable[[str, int, int], None]


class TopK(Protocol):
    def topk(self, images: Sequence[Image.Image], k: int = 5) -> list[list[int]]: ...


@dataclass
class Accuracy:
    """Hit counts over judged pictures; rates are hits / images (None when no pictures)."""

    images: int = 0
    top1_hits: int = 0
    top5_hits: int = 0

    def add(self, top: Sequence[int], classes: frozenset[int] | set[int]) -> None:
        self.images += 1
        self.top1_hits += int(bool(top) and top[0] in classes)
        self.top5_hits += int(any(c in classes for c in top[:5]))

    def merge(self, other: Accuracy) -> None:
        self.images += other.images
        self.top1_hits += other.top1_hits
        self.top5_hits += other.top5_hits

    @property
    def top1(self) -> float | None:
        return self.top1_hits / self.images if self.images else None

    @property
    def top5(self) -> float | None:
        return self.top5_hits / self.images if self.images else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "top1": self.top1, "top5": self.top5}


@dataclass
class RowResult:
    """One row: its accepted classes, the judge's top-5 on the real picture and per language."""

    file_name: str
    term: str
    classes: list[int]
    captions: dict[str, str]
    real_top5: list[int] | None = None
    generated_top5: dict[str, list[list[int]]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    # Languages whose caption came from a translations file, not from the dataset.
    translated: list[str] = field(default_factory=list)
    source: str = ""  # the dataset's source column (openclipart, emoji, tuxpaint, ...)
    roundtrip_top5: list[int] | None = None  # the real picture after the model's VAE


@dataclass
class LanguageResult:
    """Figures for one caption language, all over the rows that have such a caption."""

    language: str
    rows: int
    skipped: int  # rows without a caption in this language
    real: Accuracy
    generated: Accuracy | None = None
    english_generated: Accuracy | None = None  # English prompts, same rows (for the gap)
    # 95% bootstrap intervals over rows: with a few dozen rows the point values are noisy.
    ratio_top5_ci: tuple[float, float] | None = None
    gap_top5_ci: tuple[float, float] | None = None

    @property
    def ratio_top5(self) -> float | None:
        """Generated top-5 accuracy over real top-5 accuracy on the same rows."""
        if self.generated is None or self.generated.top5 is None or not self.real.top5:
            return None
        return self.generated.top5 / self.real.top5

    @property
    def ratio_top1(self) -> float | None:
        if self.generated is None or self.generated.top1 is None or not self.real.top1:
            return None
        return self.generated.top1 / self.real.top1

    def _gap(self, attr: str) -> float | None:
        if self.generated is None or self.english_generated is None:
            return None
        mine, english = getattr(self.generated, attr), getattr(self.english_generated, attr)
        if mine is None or english is None:
            return None
        return 100.0 * (mine - english)

    @property
    def gap_top5_points(self) -> float | None:
        """This language's generated top-5 minus English's, in percentage points."""
        return self._gap("top5")

    @property
    def gap_top1_points(self) -> float | None:
        return self._gap("top1")

    def to_dict(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "rows": self.rows,
            "skipped": self.skipped,
            "real": self.real.to_dict(),
            "generated": self.generated.to_dict() if self.generated else None,
            "english_generated_same_rows": (
                self.english_generated.to_dict() if self.english_generated else None
            ),
            "ratio_top5": self.ratio_top5,
            "ratio_top1": self.ratio_top1,
            "gap_top5_points": self.gap_top5_points,
            "gap_top1_points": self.gap_top1_points,
            "ratio_top5_ci95": self.ratio_top5_ci,
            "gap_top5_points_ci95": self.gap_top5_ci,
        }


@dataclass
class ClassResult:
    """Figures for one caption object ("cat"), over every row that names it."""

    term: str
    classes: list[int]
    rows: int = 0
    real: Accuracy = field(default_factory=Accuracy)
    generated: dict[str, Accuracy] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "classes": self.classes,
            "labels": [class_label(c) for c in self.classes],
            "rows": self.rows,
            "real": self.real.to_dict(),
            "generated": {k: v.to_dict() for k, v in self.generated.items()},
        }


@dataclass
class QualityReport:
    """Everything :func:`evaluate` measured; ``to_markdown`` for docs, ``to_json`` for files."""

    dataset: str
    split: str | None
    model: str | None
    languages: list[str]
    rows_in_split: int
    rows_mapped: int
    rows_evaluated: int
    missing_images: list[str]
    real: Accuracy
    per_language: dict[str, LanguageResult]
    per_class: list[ClassResult]
    rows: list[RowResult]
    settings: dict[str, Any]
    judge: dict[str, Any]
    timings: dict[str, float]
    generated: bool
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    environment: dict[str, Any] = field(default_factory=dict)
    roundtrip: Accuracy | None = None  # real pictures through the model's VAE (the UNet's ceiling)

    # -- targets ------------------------------------------------------------------------
    def targets(self) -> dict[str, Any]:
        """The issue's targets, with this run's value and whether it is met (None: not run)."""
        out: dict[str, Any] = {}
        for lang, res in self.per_language.items():
            ratio = res.ratio_top5
            out[f"{lang}: generated/real top-5 >= {TARGET_RATIO}"] = {
                "kind": "ratio", "value": ratio,
                "met": None if ratio is None else ratio >= TARGET_RATIO}
            if lang != "en":
                gap = res.gap_top5_points
                out[f"{lang}: |top-5 gap to en| <= {TARGET_GAP_POINTS:g} points"] = {
                    "kind": "points", "value": gap,
                    "met": None if gap is None else abs(gap) <= TARGET_GAP_POINTS}
        return out

    # -- output -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "model": self.model,
            "created": self.created,
            "languages": self.languages,
            "rows_in_split": self.rows_in_split,
            "rows_mapped": self.rows_mapped,
            "rows_evaluated": self.rows_evaluated,
            "missing_images": self.missing_images,
            "generated": self.generated,
            "real": self.real.to_dict(),
            "roundtrip": self.roundtrip.to_dict() if self.roundtrip is not None else None,
            "per_language": {k: v.to_dict() for k, v in self.per_language.items()},
            "targets": self.targets(),
            "per_class": [c.to_dict() for c in self.per_class],
            "by_source": {k: {"rows": v["rows"], "real": v["real"].to_dict(),
                              "real_for": {lang: a.to_dict() for lang, a in v["real_for"].items()},
                              "generated": {lang: a.to_dict() for lang, a in v["generated"].items()}}
                          for k, v in self.by_source().items()},
            "rows": [asdict(r) for r in self.rows],
            "settings": self.settings,
            "judge": self.judge,
            "timings": self.timings,
            "environment": self.environment,
        }

    def by_source(self) -> dict[str, dict[str, Any]]:
        """Real and generated (per language) top-5 accuracy for each source of the rows:
        where the model falls short, not only by how much."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            entry = out.setdefault(r.source or "unknown",
                                   {"rows": 0, "real": Accuracy(), "generated": {}, "real_for": {}})
            entry["rows"] += 1
            entry["real"].add(r.real_top5 or [], set(r.classes))
            for lang, tops in r.generated_top5.items():
                # Real accuracy on the rows that have this language, for a like-for-like ratio.
                entry["real_for"].setdefault(lang, Accuracy()).add(r.real_top5 or [], set(r.classes))
                acc = entry["generated"].setdefault(lang, Accuracy())
                for top in tops:
                    acc.add(top, set(r.classes))
        return dict(sorted(out.items()))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_markdown(self, *, per_class: bool = True) -> str:
        s = self.settings
        lines = [
            f"Judge: {self.judge.get('judge')} ({self.judge.get('input_size')} px "
            f"{self.judge.get('resample')}, {self.judge.get('normalization')} normalisation, "
            f"{self.judge.get('fit')} on {self.judge.get('background')}). "
            f"Dataset `{self.dataset}`, split `{self.split}`: {self.rows_in_split} rows, "
            f"{self.rows_mapped} with an English caption that names an ImageNet class"
            + (f", {self.rows_evaluated} evaluated" if self.rows_evaluated != self.rows_mapped else "")
            + (f", {len(self.missing_images)} images missing" if self.missing_images else "")
            + ".",
        ]
        if self.generated:
            lines.append(
                f"Model `{self.model or 'default'}`: {s.get('steps')} steps, guidance "
                f"{s.get('guidance') if s.get('guidance') is not None else 'default'}, "
                f"sampler {s.get('scheduler') or 'the model default'}, "
                f"{s.get('seeds_per_caption')} seed(s) per caption from seed {s.get('seed')}, "
                f"{s.get('generated_size') or 'native'} px."
            )
        if self.roundtrip is not None:
            rt = s.get("roundtrip") or {}
            psnr = f", PSNR {rt['psnr_db']:.1f} dB" if rt.get("psnr_db") is not None else ""
            lines.append(
                f"Real pictures through the VAE `{rt.get('vae', '?')}` (encode, decode{psnr}): top-1 "
                f"{_pct(self.roundtrip.top1)}, top-5 {_pct(self.roundtrip.top5)} (real: "
                f"{_pct(self.real.top5)}), the ceiling for pictures its UNet makes.")
        if s.get("translated_captions"):
            filled = ", ".join(f"{lang} {n}" for lang, n in s["translated_captions"].items())
            lines.append(f"Captions not in the dataset, from a translations file: {filled} rows.")
        lines += [
            "",
            "| captions | rows | skipped | real top-1 | real top-5 | generated top-1 "
            "| generated top-5 | generated / real (top-5) [95% CI] | top-5 gap to en (points) [95% CI] |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for lang, r in self.per_language.items():
            gen = r.generated
            ratio = _num(r.ratio_top5) + (f" [{r.ratio_top5_ci[0]:.2f}, {r.ratio_top5_ci[1]:.2f}]"
                                          if r.ratio_top5_ci else "")
            gap = ""
            if lang != "en":
                gap = _points(r.gap_top5_points) + (f" [{r.gap_top5_ci[0]:+.1f}, {r.gap_top5_ci[1]:+.1f}]"
                                                    if r.gap_top5_ci else "")
            lines.append(
                f"| {lang} | {r.rows} | {r.skipped} | {_pct(r.real.top1)} | {_pct(r.real.top5)} "
                f"| {_pct(gen.top1 if gen else None)} | {_pct(gen.top5 if gen else None)} "
                f"| {ratio} | {gap} |"
            )
        if self.generated:
            lines += ["", "Targets:"]
            for name, t in self.targets().items():
                mark = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
                value = t["value"]
                if value is None:
                    shown = "n/a"
                else:
                    shown = f"{value:.2f}" if t["kind"] == "ratio" else f"{value:+.1f}"
                lines.append(f"- {name}: {shown} ({mark})")
        sources = self.by_source()
        if self.generated and len(sources) > 1:
            langs = list(self.languages)
            lines += ["", "| source | rows | real top-5 |" + "".join(f" {lang} top-5 (ratio) |" for lang in langs),
                      "|---|---:|---:|" + "---:|" * len(langs)]
            for name, v in sources.items():
                real5 = v["real"].top5
                cells = ""
                for lang in langs:
                    acc = v["generated"].get(lang)
                    if acc is None or acc.top5 is None:
                        cells += " |"
                        continue
                    real_lang = v["real_for"][lang].top5
                    ratio = f" ({acc.top5 / real_lang:.2f})" if real_lang else ""
                    cells += f" {_pct(acc.top5)}{ratio} |"
                lines.append(f"| {name} | {v['rows']} | {_pct(real5)} |{cells}")
        if per_class and self.per_class:
            langs = [lang for lang in self.languages if self.generated]
            head = "| object | ImageNet classes | rows | real top-5 |" + "".join(
                f" {lang} top-5 |" for lang in langs)
            lines += ["", head, "|---|---|---:|---:|" + "---:|" * len(langs)]
            for c in sorted(self.per_class, key=lambda c: (-c.rows, c.term)):
                labels = [class_label(i) for i in c.classes]
                shown = ", ".join(labels[:3]) + (f" (+{len(labels) - 3})" if len(labels) > 3 else "")
                cells = "".join(
                    f" {_pct(c.generated[lang].top5) if lang in c.generated else ''} |"
                    for lang in langs)
                lines.append(f"| {c.term} | {shown} | {c.rows} | {_pct(c.real.top5)} |{cells}")
        return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _points(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1f}"


# -- the evaluation ----------------------------------------------------------------------

def _load_real(path: Path, size: int | None) -> Image.Image:
    """A real picture; scaled down (never up) so its longer side is at most ``size``."""
    image = load_image_file(path, limits=DATASET_LIMITS, what="real picture")
    if size is not None and max(image.size) > size:
        # Judge real pictures at the generated size, so both sides lose the same detail.
        scale = size / max(image.size)
        new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = to_rgb(image).resize(new, Image.Resampling.LANCZOS)
    return image


def _generator(engine: Any | None) -> Any:
    """The one use case, on the local engine or on ``engine`` (a fake, another backend)."""
    from bildwerk.app.generate import Generator
    from bildwerk.engines.registry import EngineRouter

    return Generator(EngineRouter(engines={"local": engine}) if engine is not None else None)


def _generate(generator: Any, caption: str, *, model: str | None, seed: int, count: int,
              steps: int, guidance: float | None, image_size: int | None,
              scheduler: str | None = None) -> list[Image.Image]:
    from bildwerk.core.prompt import PromptOptions
    from bildwerk.core.spec import JobSpec

    images: list[Image.Image] = []
    while len(images) < count:
        n = min(MAX_IMAGES_PER_REQUEST, count - len(images))
        fields: dict[str, Any] = {"prompt": caption, "model": model, "seed": seed + len(images),
                                  "steps": steps, "num_images": n}
        if guidance is not None:
            fields["guidance"] = guidance
        if scheduler is not None:
            fields["scheduler"] = scheduler
        if image_size is not None:
            fields["width"] = fields["height"] = image_size
        spec = JobSpec.build(origin="eval", options=PromptOptions.verbatim(), **fields)
        images.extend(generator.run(spec).images)
    return images


def load_translations(path: str | Path) -> dict[str, dict[str, str]]:
    """A tab-separated file with an ``en`` column and one column per language ->
    English caption -> {language: caption}. Empty cells are left out."""
    import csv

    with Path(path).open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader((line for line in fh if not line.startswith("#")), delimiter="\t")
        if not reader.fieldnames or "en" not in reader.fieldnames:
            raise ValueError(f"{path}: needs a header row with an 'en' column")
        out: dict[str, dict[str, str]] = {}
        for row in reader:
            en = (row.pop("en") or "").strip()
            if en:
                out[en] = {lang: text.strip() for lang, text in row.items() if lang and text and text.strip()}
    return out


def evaluate(
    dataset_dir: str | Path,
    model: str | None,
    *,
    languages: Sequence[str] = ("en", "de", "ko"),
    seeds_per_caption: int = 1,
    steps: int = 20,
    guidance: float | None = None,
    scheduler: str | None = None,
    image_size: int | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
    split: str | None = "test",
    seed: int = 0,
    generate: bool = True,
    judge: TopK | None = None,
    engine: Any | None = None,
    save_dir: str | Path | None = None,
    match_real_size: bool = True,
    translations: Mapping[str, Mapping[str, str]] | None = None,
    roundtrip: Callable[[Sequence[Image.Image]], list[Image.Image]] | None = None,
) -> QualityReport:
    """Judge real and generated pictures of the rows whose caption names ImageNet classes.

    ``model`` None is bildwerk's default model. ``guidance`` None keeps the request
    default, ``scheduler`` None the model's sampler. ``image_size`` sets the generated side (None: the model's native size).
    Real pictures larger than the generated ones are scaled down to the same side
    first (``match_real_size``; in real-only runs to ``image_size`` if given), so the
    judge sees as much detail on both sides. Row ``i``
    uses seeds ``seed + i * seeds_per_caption ...`` in every language. ``generate``
    False judges only the real pictures. ``judge``/``engine`` replace the
    efficientnet judge and the diffusers engine (tests, other backends);
    ``save_dir`` keeps the generated pictures as ``<lang>/<row>_<seed>.png``.
    ``translations`` (English caption -> {language: caption}) fills languages a row lacks
    in the dataset; such captions are marked per row and counted in the settings, so a
    report never passes them off as the dataset's own.
    ``roundtrip`` (e.g. :class:`~bildwerk.evaluation.roundtrip.VaeRoundTrip`) also judges
    every real picture after it: the ceiling the model's VAE leaves its UNet.
    """
    if seeds_per_caption < 1:
        raise ValueError("seeds_per_caption must be at least 1")
    languages = list(dict.fromkeys(languages))
    if generate and "en" not in languages:
        languages.insert(0, "en")  # the gap is measured against English
    emit = progress or (lambda _stage, _done, _total: None)
    dataset = Path(dataset_dir)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    selected = select_rows(dataset, split=split)
    rows_in_split = count_split(dataset, split)
    chosen = selected[:limit] if limit is not None else selected
    judge = judge or Judge()
    timings["load_judge"] = time.perf_counter() - t0

    # Rows whose picture is really there; the same seeds for a row in every language.
    present: list[EvalRow] = [row for row in chosen if row.image_path.is_file()]
    missing_names = [row.file_name for row in chosen if not row.image_path.is_file()]
    results = []
    for i, row in enumerate(present):
        extra = (translations or {}).get(row.captions.get("en", ""), {})
        captions = {lang: row.captions.get(lang) or extra.get(lang) for lang in languages}
        results.append(RowResult(
            file_name=row.file_name, term=row.term, classes=sorted(row.classes),
            captions={lang: c for lang, c in captions.items() if c},
            seeds=[seed + i * seeds_per_caption + j for j in range(seeds_per_caption)],
            translated=[lang for lang in languages if not row.captions.get(lang) and extra.get(lang)],
            source=row.extra.get("source", "")))

    # 1. Generate per language, then judge.
    generated_side: int | None = None
    generated_size: str | None = None
    if generate:
        generator = _generator(engine)
        out_dir = Path(save_dir) if save_dir is not None else None
        t2 = time.perf_counter()
        gen_time = judge_time = 0.0
        jobs = [(lang, r) for lang in languages for r in results if lang in r.captions]
        for n, (lang, r) in enumerate(jobs):
            emit(f"generate {lang}", n, len(jobs))
            tg = time.perf_counter()
            images = _generate(generator, r.captions[lang], model=model, seed=r.seeds[0],
                               count=seeds_per_caption, steps=steps, guidance=guidance,
                               image_size=image_size, scheduler=scheduler)
            gen_time += time.perf_counter() - tg
            if generated_side is None:
                generated_side = max(images[0].size)
                generated_size = f"{images[0].width}x{images[0].height}"
            if out_dir is not None:
                (out_dir / lang).mkdir(parents=True, exist_ok=True)
                stem = Path(r.file_name).stem
                for s, im in zip(r.seeds, images, strict=True):
                    im.save(out_dir / lang / f"{stem}_{s}.png")
            tj = time.perf_counter()
            r.generated_top5[lang] = judge.topk(images, k=5)
            judge_time += time.perf_counter() - tj
        emit("generate", len(jobs), len(jobs))
        timings.update(generate=gen_time, judge_generated=judge_time,
                       generated_total=time.perf_counter() - t2)

    # 2. The real held-out pictures, at most as large as the generated ones.
    t1 = time.perf_counter()
    real_side = image_size or (generated_side if match_real_size else None)
    real_sizes: set[str] = set()
    for start in range(0, len(present), REAL_CHUNK):
        emit("judge real", start, len(present))
        loaded: list[tuple[RowResult, Image.Image]] = []
        for row, r in zip(present[start:start + REAL_CHUNK], results[start:start + REAL_CHUNK],
                          strict=True):
            try:
                loaded.append((r, _load_real(row.image_path, real_side)))
            except (OSError, SyntaxError, ValueError):
                missing_names.append(row.file_name)  # gone or unreadable: left out, reported
        real_sizes.update(f"{im.width}x{im.height}" for _, im in loaded)
        tops = judge.topk([im for _, im in loaded], k=5)
        for (r, _), top in zip(loaded, tops, strict=True):
            r.real_top5 = top
        if roundtrip is not None:
            tops = judge.topk(roundtrip([im for _, im in loaded]), k=5)
            for (r, _), top in zip(loaded, tops, strict=True):
                r.roundtrip_top5 = top
    emit("judge real", len(present), len(present))
    # Only rows judged on both sides are compared.
    results = [r for r in results if r.real_top5 is not None]
    timings["real"] = time.perf_counter() - t1

    report = _aggregate(results, languages, generate)
    through_vae = None
    if roundtrip is not None:
        through_vae = Accuracy()
        for r in results:
            through_vae.add(r.roundtrip_top5 or [], set(r.classes))
    timings["total"] = time.perf_counter() - t0
    judge_settings = judge.settings() if hasattr(judge, "settings") else {"judge": type(judge).__name__}
    return QualityReport(
        dataset=str(dataset),
        split=split,
        model=model,
        languages=languages,
        rows_in_split=rows_in_split,
        rows_mapped=len(selected),
        rows_evaluated=len(results),
        missing_images=missing_names,
        real=report["real"],
        per_language=report["per_language"],
        per_class=report["per_class"],
        rows=results,
        settings={
            "steps": steps, "guidance": guidance, "scheduler": scheduler, "seeds_per_caption": seeds_per_caption,
            "seed": seed, "image_size": image_size, "limit": limit,
            "generated_size": generated_size,
            "real_sizes": sorted(real_sizes), "match_real_size": match_real_size,
            "translated_captions": {lang: n for lang in languages
                                    if (n := sum(lang in r.translated for r in results))},
            "roundtrip": None if roundtrip is None else {
                "vae": str(getattr(roundtrip, "path", type(roundtrip).__name__)),
                "psnr_db": getattr(roundtrip, "psnr_db", None)},
        },
        judge=judge_settings,
        timings={k: round(v, 3) for k, v in timings.items()},
        generated=generate,
        roundtrip=through_vae,
    )


def _aggregate(results: list[RowResult], languages: list[str], generate: bool) -> dict[str, Any]:
    """Turn per-row judgements into the per-language and per-class figures."""
    real = Accuracy()
    per_language: dict[str, LanguageResult] = {}
    per_class: dict[str, ClassResult] = {}
    for r in results:
        assert r.real_top5 is not None
        real.add(r.real_top5, set(r.classes))
        c = per_class.setdefault(r.term, ClassResult(term=r.term, classes=r.classes))
        c.rows += 1
        c.real.add(r.real_top5, set(r.classes))
        for lang, tops in r.generated_top5.items():
            acc = c.generated.setdefault(lang, Accuracy())
            for top in tops:
                acc.add(top, set(r.classes))
    for lang in languages:
        have = [r for r in results if lang in r.captions]
        res = LanguageResult(language=lang, rows=len(have), skipped=len(results) - len(have),
                             real=Accuracy())
        if generate:
            res.generated, res.english_generated = Accuracy(), Accuracy()
        for r in have:
            assert r.real_top5 is not None
            res.real.add(r.real_top5, set(r.classes))
            if generate:
                assert res.generated is not None and res.english_generated is not None
                for top in r.generated_top5.get(lang, []):
                    res.generated.add(top, set(r.classes))
                for top in r.generated_top5.get("en", []):
                    res.english_generated.add(top, set(r.classes))
        if generate and have:
            res.ratio_top5_ci, res.gap_top5_ci = _bootstrap(have, lang)
        per_language[lang] = res
    return {"real": real, "per_language": per_language, "per_class": list(per_class.values())}


def _bootstrap(rows: list[RowResult], lang: str, n: int = 2000, seed: int = 0
               ) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """95% percentile intervals of the generated/real top-5 ratio and of the gap to English,
    resampling rows (a row's seeds stay together)."""
    import numpy as np

    def hits(tops: list[list[int]], classes: set[int]) -> float:
        return float(np.mean([bool(set(t) & classes) for t in tops])) if tops else 0.0

    real = np.array([float(bool(set(r.real_top5 or []) & set(r.classes))) for r in rows])
    gen = np.array([hits(r.generated_top5.get(lang, []), set(r.classes)) for r in rows])
    eng = np.array([hits(r.generated_top5.get("en", []), set(r.classes)) for r in rows])
    idx = np.random.default_rng(seed).integers(0, len(rows), size=(n, len(rows)))
    real_m, gen_m, eng_m = real[idx].mean(1), gen[idx].mean(1), eng[idx].mean(1)
    ok = real_m > 0
    ratio = (tuple(float(x) for x in np.percentile(gen_m[ok] / real_m[ok], [2.5, 97.5]))
             if ok.any() else None)
    gap = tuple(float(x) for x in np.percentile(100 * (gen_m - eng_m), [2.5, 97.5])) if lang != "en" else None
    return ratio, gap  # type: ignore[return-value]
