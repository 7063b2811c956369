"""How a step runs on its device: precision (autocast), memory format and ``torch.compile``.

``train.precision=auto`` (the default) is the fast path where the hardware has it: bf16 autocast where the
device computes bf16 natively (a CPU with AVX-512 bf16 or AMX; CUDA with bf16 tensor cores, capability 8.0
or higher), fp32 elsewhere; ``train.channels_last=auto`` follows (channels_last with bf16 and on CUDA).
:func:`resolve_fast_path` turns both into concrete values before a run directory exists, so config.yaml
records what ``auto`` chose (and ``train.precision_requested: auto`` that it was chosen).
``train.compile`` stays off by default: on CPU it made ``clapp++``'s step slower after minutes of compiling
(benchmarks/RESULTS.md, the roofline entry of 2026-12-07).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
from collections.abc import Callable

import torch

from localssl.build import Components
from localssl.config import TrainConfig

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA with bf16 tensor cores (capability >= 8.0), or a CPU
    with AVX-512 bf16 or AMX tiles (oneDNN's bf16 kernels). False where torch cannot tell (older torch)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported()) and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(bool(check()) for check in checks if check is not None)
    return False


def auto_precision(device: torch.device) -> str:
    """What ``train.precision=auto`` resolves to on ``device``: ``bf16`` where native, else ``fp32``."""
    return "bf16" if native_bf16(device) else "fp32"


def resolve_fast_path(train: TrainConfig, device: torch.device) -> TrainConfig:
    """``train`` with ``precision`` and ``channels_last`` concrete (``auto`` resolved for ``device``); an
    ``auto`` precision is kept visible as ``precision_requested='auto'``."""
    if train.precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got '{train.precision}'")
    changes: dict = {}
    if train.precision == "auto":
        changes.update(precision=auto_precision(device), precision_requested="auto")
    precision = changes.get("precision", train.precision)
    if train.channels_last == "auto":
        changes["channels_last"] = device.type == "cuda" or precision == "bf16"
    return dataclasses.replace(train, **changes) if changes else train


def resume_precision_note(train: TrainConfig, device: torch.device) -> str | None:
    """On resume: a one-line note when the run's precision was chosen by ``auto`` and this hardware would
    choose otherwise (the recorded choice is kept), else None."""
    if train.precision_requested != "auto" or train.precision == "auto":
        return None
    here = auto_precision(device)
    if here == train.precision:
        return None
    return (
        f"note: train.precision=auto chose {train.precision} for this run; this {device.type} would choose {here}. "
        f"Keeping {train.precision} (resume with train.precision={here} to switch; the run is then not bit-exact)"
    )


def readout_precision(train: TrainConfig, device: torch.device) -> str:
    """The precision a probe reads a run's encoder out with: the run's own, or, where the run asked for
    ``auto``, what ``auto`` chooses on this hardware (features are read, not trained: no need to keep it)."""
    if train.precision == "auto" or train.precision_requested == "auto":
        return auto_precision(device)
    return train.precision


def autocast_for(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """The context the rule's forward passes run under: ``torch.autocast(device, bfloat16)`` for
    ``bf16``, nothing for ``fp32`` (``auto``: as it resolves on ``device``)."""
    if precision == "auto":
        precision = auto_precision(device)
    if precision == "bf16":
        return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext
    raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")


def memory_format_for(train: TrainConfig, device: torch.device) -> torch.memory_format:
    """``train.channels_last`` (``auto``: on CUDA, and with bf16) as a memory format."""
    return torch.channels_last if resolve_fast_path(train, device).channels_last else torch.contiguous_format


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
