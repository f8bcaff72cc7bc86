"""Dataset builder for bildwerk's default text-to-image model (the `bildwerk data` command).

Fetches captioned clip art from the Debian and npm registries (Tux Paint stamps,
openclipart, Twemoji), normalises it to white-background squares, removes exact and
near duplicates, splits it by group with a seed, and writes a HuggingFace-style
imagefolder (``metadata.csv`` + ``images/``) with a dataset card.

    from bildwerk.train.data import build_dataset, validate_image_folder
    summary = build_dataset("/data/clipart", size=128)
    validate_image_folder("/data/clipart").raise_if_failed()
"""

from .builder import (
    METADATA_COLUMNS,
    DatasetSummary,
    ProgressFn,
    SourceCounts,
    SourceDescription,
    available_sources,
    build_dataset,
    resolve_source,
    split_unit,
    stable_id,
)
from .dedupe import DedupeResult, find_duplicates
from .emoji import EmojiSource, emoji_caption
from .errors import DatasetError, SourceUnavailableError
from .fetch import default_cache_dir, fetch_deb, fetch_npm
from .imaging import (
    average_hash,
    difference_hash,
    fingerprint,
    gray_thumbnail,
    hamming,
    normalize_image,
)
from .openclipart import OpenClipartSource, clean_name, openclipart_caption
from .records import CSV_LANGUAGES, Source, SourceInfo, SourceRecord
from .tuxpaint import TuxPaintSource, parse_stamp_caption
from .validate import Problem, ValidationReport, validate_image_folder

__all__ = [
    "CSV_LANGUAGES",
    "METADATA_COLUMNS",
    "DatasetError",
    "DatasetSummary",
    "DedupeResult",
    "EmojiSource",
    "OpenClipartSource",
    "Problem",
    "ProgressFn",
    "Source",
    "SourceCounts",
    "SourceDescription",
    "SourceInfo",
    "SourceRecord",
    "SourceUnavailableError",
    "TuxPaintSource",
    "ValidationReport",
    "available_sources",
    "average_hash",
    "build_dataset",
    "clean_name",
    "default_cache_dir",
    "difference_hash",
    "emoji_caption",
    "fetch_deb",
    "fetch_npm",
    "find_duplicates",
    "fingerprint",
    "gray_thumbnail",
    "hamming",
    "normalize_image",
    "openclipart_caption",
    "parse_stamp_caption",
    "resolve_source",
    "split_unit",
    "stable_id",
    "validate_image_folder",
]
