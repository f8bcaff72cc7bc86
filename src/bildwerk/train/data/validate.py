"""``validate_image_folder``: check an imagefolder before training, report every problem."""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field

from bildwerk.core.errors import InvalidImageError
from bildwerk.images.io import DATASET_LIMITS, load_image_file

from .errors import DatasetError

REQUIRED_COLUMNS = ("file_name", "text")
KNOWN_SPLITS = {"train", "test", "validation"}


class Problem(BaseModel):
    """One problem; ``row`` is the 1-based data row (header excluded), ``line`` the
    line in metadata.csv (header is line 1). Both are None for folder-level problems."""

    message: str
    row: int | None = None
    line: int | None = None
    file_name: str | None = None

    def __str__(self) -> str:
        where = f"row {self.row} (line {self.line})" if self.row is not None else "metadata.csv"
        name = f" [{self.file_name}]" if self.file_name else ""
        return f"{where}{name}: {self.message}"


class ValidationReport(BaseModel):
    path: Path
    rows: int = 0
    images_checked: int = 0
    columns: list[str] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            return f"{self.path}: OK, {self.rows} rows, {self.images_checked} images"
        lines = [f"{self.path}: {len(self.problems)} problem(s) in {self.rows} rows"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """For `bildwerk train`: stop with one error that lists every problem."""
        if not self.ok:
            raise DatasetError(str(self))


def _safe_relative(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return not path.is_absolute() and ".." not in path.parts and not (name[1:3] == ":\\")


def validate_image_folder(path: str | Path, *, check_images: bool = True) -> ValidationReport:
    """Check ``path/metadata.csv`` and the images it names; never stops at the first problem.

    Checks: metadata.csv exists and parses; ``file_name`` and ``text`` columns exist;
    per row: file_name present, inside the folder, not listed twice, file exists and
    decodes as an image (fully, so truncated files are caught); caption not empty;
    ``split`` (when present) is train/test/validation.
    """
    folder = Path(path).expanduser()
    report = ValidationReport(path=folder)
    if not folder.is_dir():
        report.problems.append(Problem(message=f"folder {folder} does not exist"))
        return report
    meta = folder / "metadata.csv"
    if not meta.is_file():
        report.problems.append(Problem(message="metadata.csv is missing"))
        return report
    try:
        with meta.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            report.columns = list(reader.fieldnames or [])
            missing = [c for c in REQUIRED_COLUMNS if c not in report.columns]
            for column in missing:
                report.problems.append(Problem(message=f"required column {column!r} is missing"))
            if missing:
                return report
            seen: dict[str, int] = {}
            for row_no, row in enumerate(reader, 1):
                report.rows = row_no
                line = reader.line_num
                _check_row(folder, row, row_no, line, seen, report, check_images)
    except (UnicodeDecodeError, csv.Error) as exc:
        report.problems.append(Problem(message=f"metadata.csv cannot be read: {exc}"))
    if report.rows == 0 and not report.problems:
        report.problems.append(Problem(message="metadata.csv has no rows"))
    return report


def _check_row(
    folder: Path,
    row: dict[str, str | None],
    row_no: int,
    line: int,
    seen: dict[str, int],
    report: ValidationReport,
    check_images: bool,
) -> None:
    def add(message: str, name: str | None) -> None:
        report.problems.append(Problem(message=message, row=row_no, line=line, file_name=name or None))

    if None in row:  # DictReader puts surplus fields under the None key
        add("more fields than columns", row.get("file_name"))
    name = (row.get("file_name") or "").strip()
    text = row.get("text")
    if text is None or not text.strip():
        add("empty caption (text)", name)
    split = (row.get("split") or "").strip()
    if "split" in row and split not in KNOWN_SPLITS:
        add(f"unknown split {split!r} (expected train, test or validation)", name)
    if not name:
        add("empty file_name", None)
        return
    if not _safe_relative(name):
        add("file_name must be a relative path inside the folder", name)
        return
    if name in seen:
        add(f"file_name already listed in row {seen[name]}", name)
    else:
        seen[name] = row_no
    file = folder / name
    if not file.is_file():
        add("file does not exist", name)
        return
    if not check_images:
        return
    try:
        # The decoder training uses, with its limits: what passes here loads there.
        # A full decode, since verify() misses truncated data.
        load_image_file(file, limits=DATASET_LIMITS)
        report.images_checked += 1
    except InvalidImageError as exc:
        add(f"not a readable image ({exc})", name)
