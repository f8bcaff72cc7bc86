"""inspect_file tells checkpoints, LoRAs, embeddings, ControlNets and VAEs apart from the header."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bildwerk.core.errors import UnsafeModelError, UnsupportedModelError
from bildwerk.models.inspect import inspect_file, read_header

U = "model.diffusion_model."


def _write(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> Path:
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(path), metadata=metadata)
    return path


def _unet(in_channels: int = 4, cross: int = 768) -> dict[str, tuple[int, ...]]:
    return {
        U + "input_blocks.0.0.weight": (4, in_channels, 1, 1),
        U + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (4, cross),
        U + "output_blocks.11.0.skip_connection.weight": (2, 2, 1, 1),
        "first_stage_model.decoder.conv_in.weight": (8, 4, 1, 1),
    }


SD1_TEXT = {"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 8)}
SD2_TEXT = {"cond_stage_model.model.token_embedding.weight": (10, 8)}
SDXL_TEXT = {
    "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 8),
    "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (8,),
    "conditioner.embedders.1.model.positional_embedding": (77, 8),
}


@pytest.mark.parametrize(
    ("shapes", "family", "variant", "dtype"),
    [
        ({**_unet(), **SD1_TEXT}, "sd1", None, "v1"),
        ({**_unet(9), **SD1_TEXT}, "sd1", "inpaint", "inpainting"),
        ({**_unet(cross=1024), **SD2_TEXT}, "sd2", None, "v2"),
        ({**_unet(9, cross=1024), **SD2_TEXT}, "sd2", "inpaint", "inpainting_v2"),
        ({**_unet(cross=2048), **SDXL_TEXT}, "sdxl", None, "xl_base"),
        ({**_unet(9, cross=2048), **SDXL_TEXT}, "sdxl", "inpaint", "xl_inpaint"),
        ({**_unet(cross=2048), **SDXL_TEXT, "v_pred": (0,)}, "sdxl", "v", "xl_base"),
    ],
)
def test_checkpoints_by_diffusers_rules(tmp_path, shapes, family, variant, dtype):
    info = inspect_file(_write(tmp_path / "m.safetensors", shapes))
    assert (info.kind, info.family, info.variant) == ("checkpoint", family, variant)
    assert info.details["diffusers_type"] == dtype
    assert info.details["unet_in_channels"] == shapes[U + "input_blocks.0.0.weight"][1]
    assert info.details["has_vae"] is True


def test_small_checkpoints_placed_by_their_text_encoder(tmp_path):
    # Widths diffusers' rules do not know (a tiny model): the text side's layout decides.
    sd2 = inspect_file(_write(tmp_path / "a.safetensors", {**_unet(cross=32), **SD2_TEXT}))
    xl = inspect_file(_write(tmp_path / "b.safetensors", {
        **_unet(cross=64), "conditioner.embedders.1.model.positional_embedding": (77, 8)}))
    assert (sd2.family, xl.family) == ("sd2", "sdxl")


def test_the_tiny_single_file_checkpoints(tiny_single_files):
    seen = {kind: inspect_file(path) for kind, path in tiny_single_files.items()}
    assert {k: (i.kind, i.family, i.variant) for k, i in seen.items()} == {
        "sd": ("checkpoint", "sd1", None),
        "sd-inpaint": ("checkpoint", "sd1", "inpaint"),
        "sd2-v": ("checkpoint", "sd2", None),
        "sdxl": ("checkpoint", "sdxl", None),
        "sdxl-inpaint": ("checkpoint", "sdxl", "inpaint"),
    }


@pytest.mark.parametrize(
    ("shapes", "family", "variant", "rank"),
    [
        ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
          "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4),
          "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": ()},
         "sd1", "kohya", 4),
        ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (8, 1024)},
         "sd2", "kohya", 8),
        ({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048),
          "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768),
          "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 1280)},
         "sdxl", "kohya", 4),
        ({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (2, 768)}, "sd1", "kohya", 2),
        ({"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (4, 768),
          "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": (640, 4)},
         "sd1", "peft", 4),
        ({"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight": (4, 2048)},
         "sdxl", "diffusers", 4),
        ({"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.lora_A.weight": (4, 640),
          "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_A.weight": (4, 1280)},
         "sdxl", "peft", 4),
    ],
)
def test_loras(tmp_path, shapes, family, variant, rank):
    info = inspect_file(_write(tmp_path / "l.safetensors", shapes))
    assert (info.kind, info.family, info.variant) == ("lora", family, variant)
    assert info.details["rank"] == rank


@pytest.mark.parametrize(
    ("shapes", "family", "vectors"),
    [
        ({"emb_params": (3, 768)}, "sd1", 3),
        ({"emb_params": (2, 1024)}, "sd2", 2),
        ({"clip_l": (4, 768), "clip_g": (4, 1280)}, "sdxl", 4),
        ({"<cat-toy>": (768,)}, "sd1", 1),
        ({"emb_params": (1, 32)}, None, 1),
    ],
)
def test_embeddings(tmp_path, shapes, family, vectors):
    info = inspect_file(_write(tmp_path / "e.safetensors", shapes))
    assert (info.kind, info.family) == ("embedding", family)
    assert info.details["vectors"] == vectors


def test_controlnets(tmp_path):
    original = inspect_file(_write(tmp_path / "c.safetensors", {
        "control_model.time_embed.0.weight": (8, 4),
        "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
        "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (4, 768)}))
    diffusers_xl = inspect_file(_write(tmp_path / "d.safetensors", {
        "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
        "add_embedding.linear_1.weight": (8, 8),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (4, 2048)}))
    assert (original.kind, original.family, original.variant) == ("controlnet", "sd1", "original")
    assert original.details["conditioning_channels"] == 3
    assert (diffusers_xl.kind, diffusers_xl.family, diffusers_xl.variant) == ("controlnet", "sdxl", "diffusers")


def test_vaes(tmp_path):
    original = inspect_file(_write(tmp_path / "v.safetensors", {
        "encoder.conv_in.weight": (8, 3, 3, 3), "decoder.conv_in.weight": (8, 4, 3, 3),
        "encoder.down.0.block.0.conv1.weight": (8, 8, 3, 3)}))
    prefixed = inspect_file(_write(tmp_path / "w.safetensors", {
        "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3),
        "first_stage_model.decoder.conv_in.weight": (8, 4, 3, 3)}))
    diffusers = inspect_file(_write(tmp_path / "x.safetensors", {
        "encoder.conv_in.weight": (8, 3, 3, 3), "decoder.conv_in.weight": (8, 16, 3, 3),
        "decoder.up_blocks.0.resnets.0.conv1.weight": (8, 8, 3, 3)}))
    assert (original.kind, original.variant, original.details["latent_channels"]) == ("vae", "original", 4)
    assert (prefixed.kind, prefixed.variant) == ("vae", "original")
    assert (diffusers.kind, diffusers.variant, diffusers.details["latent_channels"]) == ("vae", "diffusers", 16)


def test_unknown_safetensors_is_no_kind(tmp_path):
    info = inspect_file(_write(tmp_path / "u.safetensors", {"some.layer.weight": (3, 3), "other.bias": (3,)}))
    assert (info.kind, info.family) == (None, None)


def test_pickle_renamed_is_refused(tmp_path):
    f = tmp_path / "evil.safetensors"
    f.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(UnsafeModelError, match="evil.safetensors is a pickle file"):
        inspect_file(f)


def test_truncated_file_is_one_clear_line(tmp_path):
    f = _write(tmp_path / "cut.safetensors", {**_unet(), **SD1_TEXT})
    data = f.read_bytes()
    f.write_bytes(data[:-10])
    with pytest.raises(UnsupportedModelError, match=r"cut.safetensors is truncated") as err:
        inspect_file(f)
    assert "\n" not in str(err.value)
    f.write_bytes(data[:40])  # cut inside the header itself
    with pytest.raises(UnsupportedModelError, match=r"cut.safetensors is truncated or corrupt"):
        inspect_file(f)


def test_huge_header_is_refused_without_reading_it(tmp_path):
    f = tmp_path / "big.safetensors"
    f.write_bytes((2**40).to_bytes(8, "little") + b"{" + b" " * 16)
    with pytest.raises(UnsupportedModelError, match="big.safetensors"):
        read_header(f)


def test_metadata_is_read(tmp_path):
    f = _write(tmp_path / "m.safetensors", {"emb_params": (1, 768)}, metadata={"ss_base_model_version": "sd_v1"})
    assert read_header(f).metadata == {"ss_base_model_version": "sd_v1"}
