"""A1111 ``parameters`` text and the JSON record inside output PNGs."""

from __future__ import annotations

import json
from io import BytesIO

import pytest
from PIL import Image, PngImagePlugin

from bildwerk.core.errors import InvalidImageError
from bildwerk.images import (
    PARAMETERS_KEY,
    RECORD_KEY,
    format_a1111_parameters,
    parse_a1111_parameters,
    png_with_metadata,
    read_png_metadata,
)

BASE = dict(steps=20, sampler="Euler a", cfg_scale=7.5, seed=42, width=512, height=768)


def test_format_matches_a1111_layout() -> None:
    text = format_a1111_parameters(
        prompt="a red fox in snow",
        negative_prompt="blurry",
        model="sd15",
        denoising_strength=0.75,
        **BASE,
    )
    assert text == (
        "a red fox in snow\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x768, "
        "Model: sd15, Denoising strength: 0.75"
    )


def test_format_omits_empty_negative_and_optional_fields() -> None:
    text = format_a1111_parameters(prompt="cat", **{**BASE, "cfg_scale": 7.0})
    assert text == "cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x768"


def test_values_with_commas_or_colons_are_json_quoted() -> None:
    text = format_a1111_parameters(
        prompt="x",
        **{**BASE, "sampler": "DPM++ 2M, Karras"},
        model="org/model:v2",
        extra={"Lora hashes": "fox: abc123, snow: def456", "Clip skip": 2, "Unused": None},
    )
    settings = text.splitlines()[-1]
    assert 'Sampler: "DPM++ 2M, Karras"' in settings
    assert 'Model: "org/model:v2"' in settings
    assert 'Lora hashes: "fox: abc123, snow: def456"' in settings
    assert settings.endswith("Clip skip: 2")
    assert "Unused" not in settings

    parsed = parse_a1111_parameters(text)
    assert parsed["Sampler"] == "DPM++ 2M, Karras"
    assert parsed["Model"] == "org/model:v2"
    assert parsed["Lora hashes"] == "fox: abc123, snow: def456"
    assert parsed["Clip skip"] == 2


def test_format_rejects_bad_extra_keys() -> None:
    with pytest.raises(ValueError):
        format_a1111_parameters(prompt="x", **BASE, extra={"Seed": 1})
    with pytest.raises(ValueError):
        format_a1111_parameters(prompt="x", **BASE, extra={"a:b": 1})


def test_parse_format_roundtrip_multiline() -> None:
    prompt = "Ein Fuchs im Schnee,\nStil: Aquarell\n\n(masterpiece:1.2)"
    negative = "unscharf\nwatermark, text"
    text = format_a1111_parameters(
        prompt=prompt, negative_prompt=negative, denoising_strength=0.5, **BASE
    )
    parsed = parse_a1111_parameters(text)
    assert parsed["prompt"] == prompt
    assert parsed["negative_prompt"] == negative
    assert parsed["Steps"] == 20 and isinstance(parsed["Steps"], int)
    assert parsed["CFG scale"] == 7.5
    assert parsed["Seed"] == 42
    assert parsed["Sampler"] == "Euler a"
    assert parsed["Size"] == "512x768"
    assert (parsed["width"], parsed["height"]) == (512, 768)
    assert parsed["Denoising strength"] == 0.5


def test_parse_real_world_a1111_text() -> None:
    text = (
        "masterpiece, best quality, 1girl, <lora:style:0.8>\r\n"
        "Negative prompt: lowres, bad anatomy\r\n"
        "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6, Seed: 3891234567, "
        "Size: 832x1216, Model hash: 0123abcd, Model: animeXL, "
        'Lora hashes: "style: 9f8e7d6c5b4a", Version: v1.9.4'
    )
    parsed = parse_a1111_parameters(text)
    assert parsed["prompt"] == "masterpiece, best quality, 1girl, <lora:style:0.8>"
    assert parsed["negative_prompt"] == "lowres, bad anatomy"
    assert parsed["Seed"] == 3891234567
    assert parsed["CFG scale"] == 6
    assert parsed["Model hash"] == "0123abcd"
    assert parsed["Lora hashes"] == "style: 9f8e7d6c5b4a"
    assert parsed["Version"] == "v1.9.4"
    assert (parsed["width"], parsed["height"]) == (832, 1216)


def test_parse_without_negative_or_settings() -> None:
    parsed = parse_a1111_parameters("just a prompt, with commas")
    assert parsed == {"prompt": "just a prompt, with commas", "negative_prompt": ""}
    parsed = parse_a1111_parameters("p\nSteps: 5, Sampler: Euler, Seed: 007")
    assert parsed["prompt"] == "p" and parsed["negative_prompt"] == ""
    assert parsed["Seed"] == "007"  # leading zeros: kept as text, not silently changed
    assert parse_a1111_parameters("") == {"prompt": "", "negative_prompt": ""}


# --- PNG roundtrip --------------------------------------------------------------------


def _record() -> dict:
    return {"prompt": "고양이, 수채화", "seed": 42, "size": [512, 512], "notes": "Grüße"}


def test_png_metadata_roundtrip_non_latin1(tmp_path) -> None:
    prompt = "Ein Kätzchen im Garten, 고양이 수채화, кошка"
    params = format_a1111_parameters(prompt=prompt, negative_prompt="unscharf", **BASE)
    data = png_with_metadata(
        Image.new("RGB", (8, 8), (1, 2, 3)), parameters=params, record=_record()
    )
    assert b"iTXt" in data  # non-latin-1 needs the UTF-8 chunk type

    for source in (data, _write(tmp_path / "out.png", data), str(tmp_path / "out.png")):
        meta = read_png_metadata(source)
        assert meta["parameters"] == params
        assert meta["parsed"]["prompt"] == prompt
        assert meta["parsed"]["negative_prompt"] == "unscharf"
        assert meta["parsed"]["Seed"] == 42
        assert meta["record"] == _record()

    with Image.open(BytesIO(data)) as im:  # other tools read the same chunk name
        assert im.text[PARAMETERS_KEY] == params
        assert json.loads(im.text[RECORD_KEY]) == _record()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_latin1_metadata_uses_plain_text_chunks() -> None:
    params = format_a1111_parameters(prompt="a fox", **BASE)
    data = png_with_metadata(Image.new("L", (4, 4)), parameters=params, record={"a": 1})
    assert b"tEXt" in data and b"iTXt" not in data
    assert read_png_metadata(data)["record"] == {"a": 1}


def test_png_without_chunks_and_non_json_record() -> None:
    plain = BytesIO()
    Image.new("RGB", (4, 4)).save(plain, "PNG")
    assert read_png_metadata(plain.getvalue()) == {"parameters": None, "parsed": {}, "record": None}

    info = PngImagePlugin.PngInfo()
    info.add_text(RECORD_KEY, "{not json")
    odd = BytesIO()
    Image.new("RGB", (4, 4)).save(odd, "PNG", pnginfo=info)
    assert read_png_metadata(odd.getvalue())["record"] is None


def test_non_png_image_has_no_metadata() -> None:
    jpeg = BytesIO()
    Image.new("RGB", (4, 4)).save(jpeg, "JPEG")
    assert read_png_metadata(jpeg.getvalue()) == {"parameters": None, "parsed": {}, "record": None}


def test_garbage_and_missing_file_raise(tmp_path) -> None:
    with pytest.raises(InvalidImageError):
        read_png_metadata(b"definitely not an image")
    with pytest.raises(InvalidImageError, match="not found"):
        read_png_metadata(tmp_path / "missing.png")
