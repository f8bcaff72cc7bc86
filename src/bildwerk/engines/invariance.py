"""Batch-invariant UNet calls: a sample's prediction is bit-identical at any batch size.

Continuous batching puts requests that arrived apart into one UNet call. Their images must be
the ones each request would have got alone (a recorded seed reproduces its picture), but
some kernels pick a different blocking by batch size and round differently (measured on CPU:
oneDNN's 1x1 convolutions and the small GEMMs of the time embedding, ~1e-5 apart, enough to
flip pixels after decoding). Two changes make every row independent of its neighbours:

* linear layers on per-sample vectors (2-D inputs: time and added embeddings) run row by
  row, so their GEMM has the same shape whatever the batch;
* 1x1 convolutions run as a linear layer over channels-last pixels (the GEMM every other
  linear layer of the UNet uses, which does not depend on the row count).

A call on a single row still takes another path in oneDNN, so ``run_unet`` never makes one:
it pads a lone row to two. tests/engine/test_batching_exact.py checks the property.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_MARK = "_bildwerk_batch_invariant"


def _rowwise_linear(module: torch.nn.Linear) -> None:
    inner = module.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[0] > 1:
            return torch.cat([inner(x[i : i + 1]) for i in range(x.shape[0])])
        return inner(x)

    module.forward = forward  # type: ignore[method-assign]


def _pointwise_as_linear(module: torch.nn.Conv2d) -> None:
    def forward(x: torch.Tensor) -> torch.Tensor:
        weight = module.weight.reshape(module.out_channels, module.in_channels)
        return F.linear(x.permute(0, 2, 3, 1), weight, module.bias).permute(0, 3, 1, 2)

    module.forward = forward  # type: ignore[method-assign]


def make_batch_invariant(network: torch.nn.Module) -> torch.nn.Module:
    """Patch ``network``'s layers in place (idempotent); weights and outputs' meaning unchanged."""
    if getattr(network, _MARK, False):
        return network
    for module in network.modules():
        if isinstance(module, torch.nn.Linear):
            _rowwise_linear(module)
        elif (isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1)
              and module.stride == (1, 1) and module.groups == 1 and module.padding in ((0, 0), 0)
              and module.dilation == (1, 1)):
            _pointwise_as_linear(module)
    setattr(network, _MARK, True)
    return network
