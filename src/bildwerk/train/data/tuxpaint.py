"""Tux Paint stamps (Debian ``tuxpaint-stamps-default``): clip art with translated captions.

Layout of the package (2022.06.04): ``usr/share/tuxpaint/stamps/<category>/.../<stem>``
with ``<stem>.png`` or ``<stem>.svg`` (83 stamps have both), ``<stem>.txt`` (caption),
optional ``<stem>.dat`` (rendering flags such as ``nomirror``) and ``.ogg``/``.wav``
sounds. ``<stem>_mirror.png`` is a hand-drawn mirror image used only when the stamp is
flipped; it has no caption of its own.

Caption files: the first line is English; each further line is ``<lang>.utf8=<text>``,
for about 75 locales (``de``, ``fr``, ``ko``, ``ru``, ``pt_BR``, ``sr@latin``...).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from .debian_source import DebianPackageSource, find_content_dir
from .records import SourceRecord

PACKAGE = "tuxpaint-stamps-default"
LICENCE = "GPL-2.0-or-later"
STAMPS_SUBDIR = Path("usr/share/tuxpaint/stamps")

_LANG_LINE = re.compile(r"^\s*([A-Za-z]{2,3}(?:_[A-Za-z]{2})?(?:@[A-Za-z]+)?)\.(?:utf8|UTF-8)\s*=(.*)$")
# Folder and file-name parts that mark a rendering variant, not a different picture.
_VARIANT_DIRS = {"filled", "outlined", "outline"}
_VARIANT_SUFFIX = re.compile(r"_(filled|outline|outlined)$")


def clean_caption(text: str) -> str:
    """Collapse whitespace and drop one trailing full stop: captions, not sentences."""
    text = " ".join(text.replace("\ufeff", "").split())
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    return text


def parse_stamp_caption(text: str) -> dict[str, str]:
    """Parse a stamp ``.txt``: first line English, then ``lang.utf8=caption`` lines.

    Returns ``{"en": ..., "de": ..., ...}`` with the locale names as written in the
    file (``pt_BR``, ``sr@latin``); empty captions and unparseable lines are skipped.
    """
    captions: dict[str, str] = {}
    english_seen = False
    for raw in text.splitlines():
        line = raw.strip().replace("\ufeff", "")
        if not line or line.startswith("#"):
            continue
        if match := _LANG_LINE.match(line):
            lang, value = match.group(1), clean_caption(match.group(2))
            lang = "en" if lang in {"en", "C"} else lang
            if value and lang not in captions:
                captions[lang] = value
            continue
        if not english_seen:
            # Only the first free-text line is the English caption; later free text is
            # a stray continuation and is ignored rather than guessed at.
            english_seen = True
            if value := clean_caption(line):
                captions.setdefault("en", value)
    return captions


def _group_key(rel_stem: Path) -> str:
    parts = [p for p in rel_stem.parent.parts if p.lower() not in _VARIANT_DIRS]
    name = _VARIANT_SUFFIX.sub("", rel_stem.name)
    return "tuxpaint:" + "/".join([*parts, name])


def stamps_dir(root: Path) -> Path:
    return find_content_dir(root, STAMPS_SUBDIR, "stamps", "*.txt", "Tux Paint stamps (*.txt captions)")


class TuxPaintSource(DebianPackageSource):
    """Adapter for Tux Paint stamps; pass ``root`` to use an already extracted tree."""

    name = "tuxpaint"
    package = PACKAGE
    licence = LICENCE
    notes = "PNG preferred where a stamp has both PNG and SVG; *_mirror.png skipped"

    def iter_records(self, root: Path) -> Iterator[SourceRecord]:
        base = stamps_dir(root)
        for txt in sorted(base.rglob("*.txt")):
            stem = txt.with_suffix("")
            # A PNG wins over an SVG of the same stamp: no renderer needed, same picture.
            image = next((p for p in (stem.with_suffix(".png"), stem.with_suffix(".svg")) if p.is_file()), None)
            if image is None:
                continue  # a few captions (e.g. christmas/gift) have no picture
            try:
                captions = parse_stamp_caption(txt.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                continue
            if not captions.get("en"):
                continue
            rel = stem.relative_to(base)
            yield SourceRecord(
                source_id=f"tuxpaint:{rel.as_posix()}",
                path=image,
                captions=captions,
                licence=LICENCE,
                group_key=_group_key(rel),
            )
