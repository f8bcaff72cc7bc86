"""Move a trained model through the GPU machine's narrow door, and data in through it.

What comes back from that machine is at most 8 files of 16 MiB each (tools/gpu/README.md), so
``pack`` writes a model folder as one tar of its small files plus its large weight files,
zlib-compressed (fp16 weights shrink by about 8%: two 35 MB UNets then fit the 64 MiB that may
come back) and cut into parts just under 16 MiB; ``unpack`` puts the folder back together
here. ``unxz`` expands the carried, xz-compressed prepared file there (Python's lzma: no xz
binary needed).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import shutil
import tarfile
import zlib
from pathlib import Path

PART = 16 * 1024 * 1024 - 64 * 1024  # each file back is at most 16 MiB
BIG = 4 * 1024 * 1024  # files above this are compressed and cut into parts


def pack(model: Path, out: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """Write ``model`` into ``out``; top-level folders named in ``exclude`` stay behind
    (the VAE, which the run only used: ``unpack`` takes it from a local model instead)."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    manifest: dict[str, dict] = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(p for p in model.rglob("*") if p.is_file()):
            rel = f.relative_to(model).as_posix()
            if rel.split("/")[0] in exclude:
                continue
            if f.stat().st_size <= BIG:
                tar.add(f, arcname=rel)
                continue
            data = f.read_bytes()
            packed = zlib.compress(data, 6)
            names = []
            for i in range(0, len(packed), PART):
                name = f"part-{len(written):02d}.bin"
                (out / name).write_bytes(packed[i : i + PART])
                written.append(out / name)
                names.append(name)
            manifest[rel] = {"parts": names, "sha256": hashlib.sha256(data).hexdigest(), "zlib": True}
        info = tarfile.TarInfo("parts.json")
        payload = json.dumps({"files": manifest, "left_out": sorted(exclude)}, indent=1).encode()
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    (out / "small.tar").write_bytes(buf.getvalue())
    return [*written, out / "small.tar"]


def unpack(parts: Path, dest: Path, fill: Path | None = None) -> Path:
    """Rebuild the model folder in ``dest``; folders ``pack`` left out are copied from ``fill``."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(parts / "small.tar") as tar:
        tar.extractall(tmp, filter="data")
    manifest = json.loads((tmp / "parts.json").read_text())
    for name in manifest["left_out"]:
        if fill is None or not (fill / name).is_dir():
            shutil.rmtree(tmp)
            raise SystemExit(f"{name}/ was left out on the GPU machine: pass --fill MODEL that has it")
        shutil.copytree(fill / name, tmp / name)
    for rel, entry in manifest["files"].items():
        data = b"".join((parts / n).read_bytes() for n in entry["parts"])
        try:
            data = zlib.decompress(data) if entry.get("zlib") else data
        except zlib.error:
            data = b""  # a damaged part: the checksum below says so
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise SystemExit(f"{rel}: the parts do not add up (checksum differs); fetch them again")
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    (tmp / "parts.json").unlink()
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def unxz(path: Path) -> Path:
    target = path.with_suffix("")
    if not target.is_file():
        with lzma.open(path) as src, open(target.with_name(target.name + ".tmp"), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        target.with_name(target.name + ".tmp").rename(target)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("model", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--exclude", action="append", default=[], help="A top-level folder to leave behind.")
    u = sub.add_parser("unpack")
    u.add_argument("parts", type=Path)
    u.add_argument("dest", type=Path)
    u.add_argument("--fill", type=Path, default=None, help="A model folder to take left-out folders from.")
    x = sub.add_parser("unxz")
    x.add_argument("path", type=Path)
    a = ap.parse_args()
    if a.cmd == "pack":
        for f in pack(a.model, a.out, tuple(a.exclude)):
            print(f, f.stat().st_size)
    elif a.cmd == "unpack":
        print(unpack(a.parts, a.dest, a.fill))
    else:
        print(unxz(a.path))


if __name__ == "__main__":
    main()
