"""A cost model of layer-parallel training against data-parallel, for K processes (``localssl bench --suite
pipeline-model``). Predictions, not measurements: they hold only as far as the assumptions below.

Inputs per layer ``l`` (one batch of ``B`` images, :mod:`localssl.bench_suites.pipeline_model`): ``F_l`` the
floating-point operations of its forward, loss and backward (``torch.utils.flop_counter``: convolutions and
matrix products), ``A_l`` the bytes of its output (what a stage sends on), ``P_l`` the bytes of its trainable
parameters (objective's ``B`` included). A device: ``R`` effective FLOP/s, ``M`` memory bandwidth (bytes/s)
for the optimizer, ``c`` optimizer bytes moved per parameter byte (AdamW in fp32: read p, g, m, v, write p, m,
v: 7); a link: bandwidth ``W`` (bytes/s) and latency ``α`` (s).

Layer time ``t_l = F_l / R + c·P_l / M``. Stages ``k = 1..K`` are contiguous blocks ``S_k`` of layers:

    T_k = Σ_{l∈S_k} t_l + (A_in(k) + A_out(k)) / W + 2α        (receive the input, send the output; k=1 and K
                                                                   have one link each)
    T   = max_k T_k                                              (the bottleneck stage sets the pace)
    pipeline epoch of N batches = (N + K − 1) · T,   bubble = (K − 1) / (N + K − 1)
    pipeline images/s = N · B / ((N + K − 1) · T)

Data-parallel over K processes (each ``B/K`` images, all layers, ring all-reduce of every gradient):

    T_dp = Σ_l F_l / (K·R) + c·Σ_l P_l / M + 2(K − 1)/K · Σ_l P_l / W + 2(K − 1)·α,   images/s = B / T_dp

One process: ``T_1 = Σ_l t_l``. Assumptions: ``R`` does not depend on the batch (so data-parallel's smaller
per-process batches and a stage's few layers run as fast per FLOP as the whole step; on a GPU this flatters
both at batch 32); transfers and all-reduces do not overlap compute (the library overlaps both partly, so
both predictions lean slow); operations the counter does not see (norms, pooling, casts, the optimizer on
CPU) are folded into ``R`` when it is calibrated from a measured one-process step (:func:`calibrate_rate`,
with ``M = inf``); the gradients are all-reduced in fp32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from localssl.train.stages import balanced_cuts

ADAMW_BYTES_PER_PARAM_BYTE = 7.0


@dataclasses.dataclass(frozen=True)
class LayerCost:
    flops: float  # forward + loss + backward, one batch
    out_bytes: float  # the layer's output, one batch
    param_bytes: float  # trainable parameters (fp32)


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    flops_per_s: float  # effective R
    mem_bytes_per_s: float = float("inf")  # M (inf: the optimizer is folded into R)
    opt_bytes_per_param_byte: float = ADAMW_BYTES_PER_PARAM_BYTE


@dataclasses.dataclass(frozen=True)
class Link:
    name: str
    bytes_per_s: float  # W
    latency_s: float = 0.0  # α


def layer_times(layers: Sequence[LayerCost], dev: Device) -> list[float]:
    return [
        lc.flops / dev.flops_per_s + dev.opt_bytes_per_param_byte * lc.param_bytes / dev.mem_bytes_per_s
        for lc in layers
    ]


def stage_times(layers: Sequence[LayerCost], bounds: Sequence[int], dev: Device, link: Link) -> list[float]:
    """``T_k`` for stages cut after ``bounds`` layers (the number of layers before each cut)."""
    t = layer_times(layers, dev)
    edges = [0, *bounds, len(layers)]
    out = []
    for k in range(len(edges) - 1):
        a, b = edges[k], edges[k + 1]
        comm = 0.0
        if k > 0:
            comm += layers[a - 1].out_bytes / link.bytes_per_s + link.latency_s
        if k < len(edges) - 2:
            comm += layers[b - 1].out_bytes / link.bytes_per_s + link.latency_s
        out.append(sum(t[a:b]) + comm)
    return out


def bubble(n_stages: int, n_batches: int) -> float:
    return (n_stages - 1) / (n_batches + n_stages - 1)


def pipeline(
    layers: Sequence[LayerCost],
    batch: int,
    n_stages: int,
    dev: Device,
    link: Link,
    n_batches: int,
    bounds: Sequence[int] | None = None,
) -> dict[str, float | list]:
    """The pipeline's images/s over ``n_batches`` batches, its bubble and speed-up over one process; ``bounds``
    default to the cuts that minimise the slowest stage's compute (as ``train.stage_bounds=auto`` does)."""
    if bounds is None:
        bounds = balanced_cuts(layer_times(layers, dev), n_stages) if n_stages > 1 else []
    ts = stage_times(layers, bounds, dev, link)
    t_step = max(ts)
    ips = n_batches * batch / ((n_batches + n_stages - 1) * t_step)
    one = batch / sum(layer_times(layers, dev))
    return {
        "images_per_s": ips,
        "bubble": bubble(n_stages, n_batches),
        "speedup": ips / one,
        "bounds": list(bounds),
        "stage_s": ts,
    }


def data_parallel(layers: Sequence[LayerCost], batch: int, n_procs: int, dev: Device, link: Link) -> dict[str, float]:
    flops = sum(lc.flops for lc in layers)
    params = sum(lc.param_bytes for lc in layers)
    k = n_procs
    t = flops / (k * dev.flops_per_s) + dev.opt_bytes_per_param_byte * params / dev.mem_bytes_per_s
    comm = (2 * (k - 1) / k * params / link.bytes_per_s + 2 * (k - 1) * link.latency_s) if k > 1 else 0.0
    ips = batch / (t + comm)
    return {
        "images_per_s": ips,
        "allreduce_s": comm,
        "step_s": t + comm,
        "speedup": ips / (batch / sum(layer_times(layers, dev))),
    }


def calibrate_rate(layers: Sequence[LayerCost], batch: int, images_per_s: float) -> float:
    """The effective FLOP/s ``R`` at which one process runs a measured step (everything folded into it)."""
    return sum(lc.flops for lc in layers) * images_per_s / batch
