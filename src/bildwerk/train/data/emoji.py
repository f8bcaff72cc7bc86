"""Twemoji PNGs from npm ``emoji-datasource-twitter``: names from its emoji.json.

Layout of the package (16.0.0): ``package/emoji.json`` (1,911 entries; ``name`` is the
Unicode name, mostly upper case, flags read "Germany Flag"; ``short_names``,
``category``, ``subcategory``, ``image``, ``skin_variations``, ``obsoleted_by``) and
``package/img/twitter/64/<image>`` (3,786 64-px PNGs: the base emoji plus 1,875
skin-tone variants). The largest size shipped is 64 px, so the images are upscaled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .fetch import fetch_npm
from .records import SourceInfo, SourceRecord

PACKAGE = "emoji-datasource-twitter"
VERSION = "16.0.0"
LICENCE = "CC-BY-4.0"
ATTRIBUTION = (
    "Twemoji graphics by Twitter, Inc. and other contributors, licensed under CC-BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/); emoji data from emoji-datasource "
    "by Cal Henderson (MIT)."
)
IMAGE_SUBDIR = Path("img/twitter/64")
# Component emoji are bare skin-tone swatches and hair styles: no picture to learn.
SKIP_CATEGORIES = {"Component"}

# Skin tone modifiers as named in CLDR, for captions of the optional variants.
_SKIN_TONES = {
    "1F3FB": "light skin tone",
    "1F3FC": "medium-light skin tone",
    "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone",
    "1F3FF": "dark skin tone",
}
_FLAG_CODE = re.compile(r"^flag [a-z]{2}$")  # "flag-de": a code, not a caption
_WORD_FIXES = {"oclock": "o'clock", "ok": "OK", "tv": "TV", "sos": "SOS", "id": "ID"}


def emoji_caption(name: str, short_name: str = "") -> str:
    """Readable caption: ``"RED APPLE"`` -> ``"red apple"``; keeps "Germany Flag" as is."""
    text = name.strip()
    if ":" in text and short_name:
        # "WOMAN: BEARD" reads better as its short name "woman with beard".
        short = short_name.replace("_", " ").replace("-", " ").strip()
        if len(short.split()) > 1:
            text = short
        else:
            text = text.replace(":", ",")
    if text.isupper() or text == text.lower():
        text = text.lower()
    words = [_WORD_FIXES.get(w, w) for w in text.split()]
    if len(words) > 1 and words[-1] == "Flag":
        words[-1] = "flag"  # "Germany Flag": keep the proper name, not the capital F
    return " ".join(words)


def _short_caption(short_name: str) -> str:
    return " ".join(re.split(r"[_\-]+", short_name)).strip()


def package_dir(root: Path) -> Path:
    """Accept the npm tarball root (with package/) or the package folder itself."""
    for candidate in (root / "package", root):
        if (candidate / "emoji.json").is_file():
            return candidate
    raise FileNotFoundError(f"no emoji.json under {root}")


class EmojiSource:
    """Adapter for Twemoji; pass ``root`` to use an already extracted npm package.

    Skin-tone variants are the same drawing recoloured; they are left out unless
    ``include_skin_tones`` is set, and then share their base emoji's group.
    """

    name = "emoji"
    licence = LICENCE

    def __init__(
        self, root: Path | str | None = None, *, version: str = VERSION, include_skin_tones: bool = False
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.version = version
        self.include_skin_tones = include_skin_tones

    def fetch(self, cache_dir: Path) -> SourceInfo:
        if self.root is not None:
            return SourceInfo(self.name, PACKAGE, "local", "local", LICENCE, self.root, notes=ATTRIBUTION)
        pkg = fetch_npm(PACKAGE, self.version, cache_dir)
        return SourceInfo(
            self.name, PACKAGE, "npm", pkg.version, LICENCE, pkg.root, pkg.sha256, notes=ATTRIBUTION
        )

    def iter_records(self, root: Path) -> Iterator[SourceRecord]:
        base = package_dir(root)
        entries: list[dict[str, Any]] = json.loads((base / "emoji.json").read_text(encoding="utf-8"))
        images = base / IMAGE_SUBDIR
        for entry in sorted(entries, key=lambda e: str(e.get("unified", ""))):
            if entry.get("category") in SKIP_CATEGORIES or not entry.get("has_img_twitter", True):
                continue
            name = entry.get("name") or ""
            short = entry.get("short_name") or ""
            caption = emoji_caption(name, short) if name else _short_caption(short)
            if not caption:
                continue
            alts = tuple(
                dict.fromkeys(
                    c
                    for s in entry.get("short_names") or []
                    if (c := _short_caption(s))
                    and len(c) > 2
                    and c != caption
                    and not _FLAG_CODE.match(c)
                )
            )
            unified = str(entry.get("unified", "")).lower()
            # An emoji replaced by a gendered form ("RUNNER" -> man running) is drawn alike.
            group = str(entry.get("obsoleted_by") or entry.get("unified", "")).lower()
            path = images / str(entry.get("image", ""))
            if path.is_file():
                yield SourceRecord(
                    source_id=f"emoji:{unified}",
                    path=path,
                    captions={"en": caption},
                    licence=LICENCE,
                    group_key=f"emoji:{group}",
                    alt_captions={"en": alts} if alts else {},
                )
            if not self.include_skin_tones:
                continue
            for tone, variant in sorted((entry.get("skin_variations") or {}).items()):
                tone_name = ", ".join(_SKIN_TONES.get(t.upper(), t) for t in tone.split("-"))
                vpath = images / str(variant.get("image", ""))
                if vpath.is_file() and variant.get("has_img_twitter", True):
                    yield SourceRecord(
                        source_id=f"emoji:{str(variant.get('unified', '')).lower()}",
                        path=vpath,
                        captions={"en": f"{caption}, {tone_name}"},
                        licence=LICENCE,
                        group_key=f"emoji:{group}",
                    )
