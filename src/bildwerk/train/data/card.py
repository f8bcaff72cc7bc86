"""The dataset card: a README for the built folder (sources, licences, counts, method)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .emoji import ATTRIBUTION as TWEMOJI_ATTRIBUTION

if TYPE_CHECKING:
    from .builder import DatasetSummary

_LICENCE_TEXT = {
    "tuxpaint": (
        "GPL-2.0-or-later. Tux Paint stamps, (c) 2002-2022 Bill Kendrick and the Tux Paint "
        "contributors; captions and their translations come from the same package. A model "
        "trained on them may count as a derived work: check before you ship weights."
    ),
    "openclipart": (
        "Public domain (Open Clip Art Library, Creative Commons Public Domain Dedication)."
    ),
    "emoji": TWEMOJI_ATTRIBUTION + " Attribution is required when you redistribute the images.",
}

_LANG_NAMES = {"en": "English", "de": "German", "fr": "French", "ko": "Korean", "ru": "Russian"}


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_dataset_card(summary: DatasetSummary) -> str:
    splits = summary.splits
    source_rows = [
        [s.name, f"{s.registry} `{s.package}`", s.version, s.licence]
        for s in summary.sources
    ]
    count_rows = [
        [name, c.records, c.failed, c.merged, c.images, c.train, c.test]
        for name, c in summary.per_source.items()
    ]
    split_names = sorted(summary.per_language_split)
    lang_rows = [
        [f"{_LANG_NAMES.get(lang, lang)} (`{'text' if lang == 'en' else 'text_' + lang}`)",
         summary.per_language.get(lang, 0),
         *(summary.per_language_split[s].get(lang, 0) for s in split_names)]
        for lang in summary.per_language
    ]
    licences = "\n".join(
        f"- **{s.name}**: {_LICENCE_TEXT.get(s.name, s.licence)}" for s in summary.sources
    )
    failures = ""
    if summary.failures:
        shown = "\n".join(f"- {f}" for f in summary.failures[:20])
        more = len(summary.failures) - 20
        failures = f"\n## Pictures left out\n\n{shown}\n" + (f"- ... and {more} more\n" if more > 0 else "")
    return f"""# bildwerk clip-art dataset

Captioned clip art for training bildwerk's small default text-to-image model, built
offline from packages of the Debian and npm registries by `bildwerk data`
(`bildwerk.train.data.build_dataset`).

- **Images:** {summary.images} PNG, {summary.size} x {summary.size} px, RGB, white background
- **Splits:** {", ".join(f"{k}: {v}" for k, v in splits.items())} (seed {summary.seed}, test fraction {summary.test_fraction})
- **Format:** HuggingFace imagefolder: `metadata.csv` next to `images/`

## Sources

{_table(["source", "package", "version", "licence"], source_rows)}

## Licences

Each row of `metadata.csv` names the licence(s) of its picture and captions in the
`licence` column (`A AND B` when duplicates from two sources were merged).

{licences}

## Counts

{_table(["source", "records", "failed", "merged as duplicate", "images", "train", "test"], count_rows)}

`records` counts captioned entries (an openclipart symlink is a record of its own),
`failed` the records whose picture was left out (listed at the end), `merged` the
records folded into an image of the same picture, symlinks included.
Exact duplicates merged: {summary.exact_duplicates}; near duplicates merged: {summary.near_duplicates}.

Captions per language (images that have one):

{_table(["language", "all", *split_names], lang_rows)}

## Columns

- `file_name`: the image, relative to this folder
- `text`: English caption; `text_de`, `text_fr`, `text_ko`, `text_ru`: translations (empty when the source has none)
- `split`: `train` or `test`
- `source`: where the picture comes from; `licence`: see above
- `source_ids`: every source record merged into this image, `;`-separated

`captions.jsonl` lists every caption in every language the sources offer (Tux Paint
has about 75 locales), alternatives included, one JSON object per image.

## How it was built

1. Fetch: `apt-get download` + `dpkg -x` (Debian), `npm pack` + untar (npm), cached.
2. Captions: Tux Paint `.txt` files (first line English, then `lang.utf8=...`);
   openclipart folder and file names (authors, numbering, underscores removed; the
   folder adds a noun, e.g. "blue jay, bird"; Italian titles are translated word by
   word; the 1,360 generated many-pointed "star" polygrams and two "Linked Image Not
   Found" placeholders are skipped); emoji names from `emoji.json`.
   Tux Paint SVGs are rendered with rsvg-convert ({summary.svg_renderer or "not available: SVG-only stamps skipped"});
   where a stamp has a PNG too, the PNG is used. Emoji skin-tone variants are left out.
3. Normalise: transparency composited onto white, transparent borders (and white
   frames around opaque pictures) trimmed, centred on a white square with a 4% margin,
   resized with LANCZOS.
4. De-duplicate before splitting: identical pixels (SHA-256), and near duplicates
   (64-bit difference and average hashes of a 16x16 greyscale thumbnail within
   {summary.near_max_hamming} bits, confirmed by 32x32 colour thumbnails that, allowing each pixel to match
   its 3x3 neighbourhood, nowhere differ by more than {summary.near_max_thumb_diff}/255 and on average over
   the drawn part by at most {summary.near_max_mean_diff}/255). Duplicates become one image with their captions merged; the
   first source in the build order provides the picture. Blank pictures (white art on
   transparency) are left out.
5. Split: every group of duplicates and same-picture variants (PNG/SVG, filled/outlined
   letters, symlinked copies, obsolete emoji forms) goes to one split, chosen by a hash
   of the seed and the group key, so the same inputs and seed give the same split and
   adding a source does not move existing groups.

Emoji are upscaled from 64 px (the largest size the package ships) and look softer.
{failures}"""


def write_dataset_card(path: Path, summary: DatasetSummary) -> None:
    path.write_text(render_dataset_card(summary), encoding="utf-8")
