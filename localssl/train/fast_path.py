"""How a step runs on its device: precision (autocast), memory format and ``torch.compile``."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable

import torch

from localssl.build import Components
from localssl.config import TrainConfig

PRECISIONS = ("fp32", "bf16")


def autocast_for(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """The context the rule's forward passes run under: ``torch.autocast(device, bfloat16)`` for
    ``bf16``, nothing for ``fp32``."""
    if precision == "bf16":
        return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext
    raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")


def memory_format_for(train: TrainConfig, device: torch.device) -> torch.memory_format:
    """``train.channels_last`` (``auto``: on CUDA) as a memory format."""
    use = train.channels_last if train.channels_last != "auto" else device.type == "cuda"
    return torch.channels_last if use else torch.contiguous_format


def compile_step(comp: Components, mode: bool | str, device: torch.device) -> bool:
    """``train.compile``: ``torch.compile`` every layer and every layer's objective, i.e. the per-layer
    step ``h = layer(x); loss = objective(h, refs)`` (and its backward) of the local rules, fused by
    inductor into few kernels. ``reduce-overhead`` also records each compiled piece as a CUDA graph
    (one launch per piece instead of one per kernel); that needs CUDA: on another device it compiles
    without graphs and says so. Returns whether CUDA graphs are in use."""
    if not mode:
        return False
    graphs = mode == "reduce-overhead" and device.type == "cuda"
    if mode == "reduce-overhead" and not graphs:
        print(
            f"note: train.compile=reduce-overhead records CUDA graphs, which need a CUDA device; on {device.type} "
            "the layers and objectives are compiled without them (as train.compile=true)",
            file=sys.stderr,
        )
    modules = [*comp.encoder.layers, *comp.rule.objectives.values()]
    for module in modules:
        module.compile(mode="reduce-overhead" if graphs else None)
    return graphs
