"""Backprop (``bp-clapp++``) pipelined over processes with PyTorch's own schedules (``torch.distributed.pipelining``):
the reference point (e) of the ``layer-parallel`` suite. Run under torchrun, one stage per rank::

    torchrun --nproc_per_node=2 -m localssl.bench_suites.pp_backprop --schedule gpipe --microbatches 4 \
        --steps 16 --warmup 2 --json OUT.json [key=value ...]

Every rank builds the preset (``bp-clapp++`` unless ``--preset``) as :class:`~localssl.train.Trainer` does on random
uint8 images of the dataset's shape, keeps its contiguous block of VGG layers (``--bounds``, default: the first
half of the layers on rank 0) and an AdamW over its parameters (the last stage: with the objective's ``B``), and
steps ``schedule.step`` under the run's autocast (the default precision ``auto``). Each global batch of
``train.batch_size`` images is split into ``--microbatches`` microbatches of whole images (both SimCLR views of an
image in the same one), so the contrastive loss draws its negatives within a microbatch: a different objective
from the one-process ``bp-clapp++`` (whose negatives are the whole batch), timed here for its cost only.
Rank 0 writes ``images_per_s`` (its wall clock over ``--steps`` steps after ``--warmup``), ``peak_memory_per_rank``
(peak RSS of the run and of the timed steps alone, MiB) and the schedule to ``--json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

SCHEDULES = ("gpipe", "1f1b")


class _Block(nn.Module):
    """Layers of one stage. gloo sends only contiguous tensors ("RuntimeError: input tensor has to be
    contiguous" for the channels_last activations of the fast path), so the block takes and gives row-major
    (NCHW-contiguous) tensors and runs its layers in ``memory_format``."""

    def __init__(self, layers: list[nn.Module], memory_format: torch.memory_format) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.memory_format = memory_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        for layer in self.layers:
            x = layer(x)
        return x.contiguous()


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    from localssl.config import load_config
    from localssl.data import ImageData, data_info
    from localssl.train import Trainer
    from localssl.train.stages import EpochPeak, peak_memory_mb
    from localssl.views.base import ViewBatch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="bp-clapp++")
    ap.add_argument("--schedule", choices=SCHEDULES, default="gpipe")
    ap.add_argument("--microbatches", type=int, default=4)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bounds", type=int, nargs="*", help="layers before each cut (default: even split)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = load_config(args.preset, ["train.progress=false", *args.overrides])
    info = data_info(cfg.data)
    bs, m = cfg.train.batch_size, args.microbatches
    if bs % m:
        raise SystemExit(f"train.batch_size={bs} is not a multiple of --microbatches {m}")
    g = torch.Generator().manual_seed(cfg.train.seed)
    n = bs * 4
    shape = (n, info.channels, info.image_size, info.image_size)
    data = ImageData(torch.randint(0, 256, shape, dtype=torch.uint8, generator=g), torch.zeros(n).long(), [])
    trainer = Trainer(cfg, Path(tempfile.gettempdir()) / f"localssl-ppbp-{rank}", data=data)
    encoder, rule = trainer.comp.encoder, trainer.comp.rule
    n_layers = len(encoder.layers)
    cuts = args.bounds if args.bounds else [round(n_layers * k / world) for k in range(1, world)]
    bounds = [0, *cuts, n_layers]
    block = _Block([encoder.layers[i] for i in range(bounds[rank], bounds[rank + 1])], trainer.memory_format)
    objective = rule.objectives[str(rule.top)]
    params = list(block.parameters()) + (list(objective.parameters()) if rank == world - 1 else [])
    opt = torch.optim.AdamW(params, lr=cfg.train.lr)
    stage = PipelineStage(block, rank, world, trainer.device)

    def batch(t: int) -> tuple[torch.Tensor, torch.Tensor, list[ViewBatch]]:
        """One global batch as ``m`` microbatches of whole images: the input, each row's microbatch index, and
        each microbatch's views (the schedule cuts the input into ``m`` equal chunks along rows)."""
        idx = torch.arange(bs) + (t % 4) * bs
        views = [trainer.make_views(c) for c in idx.chunk(m)]
        x = torch.cat([v.x for v in views]).contiguous(memory_format=trainer.memory_format)
        which = torch.cat([torch.full((v.x.shape[0],), i) for i, v in enumerate(views)])
        return x, which, views

    current: list[ViewBatch] = []

    def loss_fn(h: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        with trainer.step_context.autocast():
            return objective(h, [h], current[int(which[0])]).loss

    sched_cls = ScheduleGPipe if args.schedule == "gpipe" else Schedule1F1B
    schedule = sched_cls(stage, n_microbatches=m, loss_fn=loss_fn)

    def step(t: int) -> None:
        x, which, views = batch(t)
        current[:] = views
        opt.zero_grad(set_to_none=True)
        with trainer.step_context.autocast():
            if rank == 0:
                schedule.step(x)
            elif rank == world - 1:
                schedule.step(target=which)
            else:
                schedule.step()
        opt.step()

    for t in range(args.warmup):
        step(t)
    dist.barrier()
    peak = EpochPeak()  # the timed steps' own peak RSS, as a training epoch's
    peak.start()
    t0 = time.perf_counter()
    for t in range(args.steps):
        step(args.warmup + t)
    dist.barrier()
    seconds = time.perf_counter() - t0
    peak.stop()
    memory = [None] * world
    dist.all_gather_object(memory, peak_memory_mb(trainer.device, peak))
    if rank == 0:
        out = {
            "preset": args.preset,
            "schedule": args.schedule,
            "microbatches": m,
            "batch_size": bs,
            "steps": args.steps,
            "warmup": args.warmup,
            "stages": [f"{a + 1}-{b}" for a, b in itertools.pairwise(bounds)],
            "images_per_s": args.steps * bs / seconds,
            "peak_memory_per_rank": memory,
        }
        print(json.dumps(out))
        if args.json:
            args.json.write_text(json.dumps(out, indent=2) + "\n")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
