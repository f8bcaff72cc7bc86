"""Tiny safetensors files of each kind people keep in an A1111 folder, for the manager's tests."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file


def kohya_lora(path: Path, rank: int = 4, cross: int = 768) -> Path:
    """A LoRA in kohya's layout (A1111's models/Lora files): a down/up pair and its alpha."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({f"{base}.lora_down.weight": torch.randn(rank, cross),
               f"{base}.lora_up.weight": torch.randn(320, rank), f"{base}.alpha": torch.tensor(float(rank))},
              str(path), metadata={"ss_network_dim": str(rank)})
    return path


def embedding(path: Path, vectors: int = 2, width: int = 768) -> Path:
    """A textual-inversion embedding as A1111 saves it (``emb_params``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(vectors, width)}, str(path))
    return path
