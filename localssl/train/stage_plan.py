"""Which layers each stage of a layer-parallel run holds (:mod:`localssl.train.pipeline`), decided before any
stage builds its layers.

:func:`stage_bounds` reads the cuts the rule allows from a ``meta`` build of the network (shapes only, no memory,
the generator untouched) and takes ``train.stage_bounds``, or with ``auto`` the cuts that minimise the slowest
stage's time per batch: rank 0 measures every block between allowed cuts (:func:`measure_blocks`, on a whole
build of its own that it frees before its stage is built) and every rank receives the times. Each stage then
builds only its own layers (:func:`build_stage`, :func:`~localssl.partial_build.only_layers`)."""

from __future__ import annotations

import itertools
import sys
import time

import torch
import torch.distributed as dist

from localssl import distributed
from localssl.build import Components, build, build_network
from localssl.config import RunConfig
from localssl.data import ImageData, data_info
from localssl.distributed import World
from localssl.partial_build import only_layers
from localssl.rules.base import StepContext
from localssl.train.fast_path import autocast_for, memory_format_for
from localssl.train.stages import balanced_cuts, describe_stages


def stage_bounds(cfg: RunConfig, world: World, device: torch.device, data: ImageData) -> list[int]:
    """``[0, cut_1, ..., n_layers]``: stage ``k`` runs layers ``bounds[k] .. bounds[k+1]-1`` (0-based); the same
    on every rank (with ``auto``, rank 0's measurement on ``data`` is shared). Printed by rank 0."""
    t, k = cfg.train, world.size
    with torch.random.fork_rng(devices=[]), only_layers(None), torch.device("meta"):
        encoder, _, rule = build_network(cfg, data_info(cfg.data))  # the network's structure only
    n_layers = len(encoder)
    allowed = rule.stage_cuts(n_layers)
    del encoder, rule
    if k > len(allowed) + 1:
        raise ValueError(
            f"train.parallel=layers: {k} processes but rule '{cfg.rule.name}' on {n_layers} layers can be "
            f"cut into at most {len(allowed) + 1} stages (cuts after layers {allowed}); start fewer processes"
        )
    costs = None
    if t.stage_bounds == "auto":
        edges = [0, *allowed, n_layers]
        if world.is_main:
            costs = measure_blocks(cfg, device, data, [range(a, b) for a, b in itertools.pairwise(edges)])
        costs = distributed.broadcast_object(costs)
        cuts = [edges[i] for i in balanced_cuts(costs, k)]
    else:
        cuts = [int(b) for b in t.stage_bounds]
        if len(cuts) != k - 1 or any(b not in allowed for b in cuts) or cuts != sorted(set(cuts)):
            raise ValueError(
                f"train.stage_bounds={list(t.stage_bounds)} does not cut {n_layers} layers into the {k} stages "
                f"torchrun started: give {k - 1} increasing layer counts among {allowed}, or "
                "train.stage_bounds=auto"
            )
    bounds = [0, *cuts, n_layers]
    if world.is_main:
        print(describe_stages(bounds, costs, allowed, dist.get_backend()), file=sys.stderr)
    return bounds


def measure_blocks(cfg: RunConfig, device: torch.device, data: ImageData, units: list[range]) -> list[float]:
    """Seconds per batch of each unit's forward + loss + backward (best of two after a warm-up), on one batch of
    ``data``, with a whole build of the network made and freed here (the generators are left as they were)."""
    t = cfg.train
    times: list[list[float]] = [[] for _ in units]
    memory_format = memory_format_for(t, device)
    ctx = StepContext(autocast=autocast_for(t.precision, device))
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        comp = build(cfg, device)
        comp.encoder.to(memory_format=memory_format)
        idx = torch.arange(min(t.batch_size, len(data.images)))
        views = comp.views(data.images[idx].to(device), data.labels[idx].to(device))
        if views.x.dim() == 4:
            views.x = views.x.contiguous(memory_format=memory_format)
        for _ in range(3):
            h = views.x
            for u, layers in enumerate(units):
                sync()
                t0 = time.perf_counter()
                h, _ = comp.rule.step_layers(comp.encoder, h, views, ctx, layers)
                sync()
                times[u].append(time.perf_counter() - t0)
    del comp, views, h
    return [min(ts[1:]) for ts in times]


def build_stage(cfg: RunConfig, device: torch.device, layers: range) -> Components:
    """The network with only ``layers`` (0-based) and their objectives built, with the whole build's weights;
    the other layers are ``meta`` tensors (those of encoders built all at once are freed here)."""
    with only_layers(layers):
        comp = build(cfg, device)
    for i, layer in enumerate(comp.encoder.layers):
        if i not in layers:
            layer.to("meta")
    for key, objective in comp.rule.objectives.items():
        if int(key) - 1 not in layers:
            objective.to("meta")
    return comp
