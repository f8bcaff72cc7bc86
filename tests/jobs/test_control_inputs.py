"""ControlNet pictures in the job store: kept as input blobs (role control<i>), given back to the
request by ``JobSpec.from_stored`` and named in an export's metadata.csv like the input picture."""

from __future__ import annotations

import csv

from PIL import Image, ImageDraw

from bildwerk.core.spec import JobSpec
from bildwerk.images.io import decode_image, encode_png
from bildwerk.jobs.store import Store


def _picture(shade: int) -> Image.Image:
    im = Image.new("RGB", (64, 64), (shade, shade, shade))
    ImageDraw.Draw(im).line((0, 0, 63, 63), fill=(255 - shade, 0, 0), width=3)
    return im


def test_control_pictures_round_trip_through_the_store_and_the_export(tmp_path):
    spec = JobSpec.build(prompt="a house", seed=3, controls=[
        {"model": "edges", "image": _picture(10), "preprocessor": "canny", "scale": 0.5},
        {"model": "lines", "image": _picture(200), "preprocessor": "scribble", "start": 0.2}])
    inputs = spec.inputs()
    assert set(inputs) == {"control0", "control1"}
    with Store(tmp_path / "store") as store:
        row = store.create_job(request=spec.stored()["request"], api="native", engine="local",
                               inputs={role: encode_png(im) for role, im in inputs.items()})
        row = store.get(row.id)
        pictures = {role: decode_image(store.read_image(sha), what=role) for role, sha in row.inputs.items()}
        again = JobSpec.from_stored(row.request, row.options, origin="native", **pictures)
        assert again.request.record() == spec.request.record()  # the same units, the same picture hashes
        assert [u.image_sha256 for u in again.request.controls] == [u.image_sha256 for u in spec.request.controls]
        store.claim_next()
        store.finish(row.id, [(encode_png(_picture(90)), 3)], {})
        out = store.export(None, tmp_path / "export")
    with (out / "metadata.csv").open(encoding="utf-8", newline="") as f:
        first = next(csv.DictReader(f))
    assert first["input_control0"] == f"inputs/{row.id}_control0.png"
    assert (out / first["input_control1"]).is_file()
