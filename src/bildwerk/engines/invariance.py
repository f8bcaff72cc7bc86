"""Batch-invariant UNet calls: a sample's prediction is bit-identical at any batch size.

Continuous batching puts requests that arrived apart into one UNet call. Their images must be
the ones each request would have got alone (a recorded seed reproduces its picture), but
some kernels pick a different blocking by batch size and round differently (measured on CPU:
oneDNN's 1x1 convolutions and the small GEMMs of the time embedding, ~1e-5 apart, enough to
flip pixels after decoding). Two changes make every row independent of its neighbours:

* linear layers on per-sample vectors (2-D inputs: time and added embeddings) run row by
  row, so their GEMM has the same shape whatever the batch;
* 1x1 convolutions run as a batched matmul, one (out, in) x (in, pixels) product per sample,
  whose shape does not depend on the batch (as fast as the convolution, measured; running them
  as a linear layer over channels-last pixels was also exact but 20% slower per UNet call).

A call on a single row still takes another path in oneDNN, so ``run_unet`` never makes one:
it pads a lone row to two. tests/engine/test_batching_exact.py checks the property.
"""

from __future__ import annotations

import torch

_MARK = "_bildwerk_batch_invariant"


def _rowwise_linear(module: torch.nn.Linear) -> None:
    inner = module.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[0] > 1:
            return torch.cat([inner(x[i : i + 1]) for i in range(x.shape[0])])
        return inner(x)

    module.forward = forward  # type: ignore[method-assign]


def _pointwise_per_sample(module: torch.nn.Conv2d) -> None:
    def forward(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        weight = module.weight.reshape(module.out_channels, module.in_channels)
        # A batched matmul: one (out, in) x (in, h*w) product per sample, the same shape at any
        # batch size (no permute copies: measured as fast as the convolution).
        y = torch.matmul(weight, x.reshape(n, c, h * w))
        if module.bias is not None:
            y = y + module.bias[:, None]
        return y.reshape(n, module.out_channels, h, w)

    module.forward = forward  # type: ignore[method-assign]


def make_batch_invariant(network: torch.nn.Module) -> torch.nn.Module:
    """Patch ``network``'s layers in place; weights and outputs' meaning unchanged. Idempotent per
    module, so running it again after layers were added (peft's LoRA ``lora_A``/``lora_B``, a
    ControlNet) patches only the new ones."""
    for module in network.modules():
        if getattr(module, _MARK, False):
            continue
        if isinstance(module, torch.nn.Linear):
            _rowwise_linear(module)
        elif (isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1)
              and module.stride == (1, 1) and module.groups == 1 and module.padding in ((0, 0), 0)
              and module.dilation == (1, 1)):
            _pointwise_per_sample(module)
        else:
            continue
        setattr(module, _MARK, True)
    return network
