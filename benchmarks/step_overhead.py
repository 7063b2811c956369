"""Per-step overhead of localssl's training loop against a bare hand-written loop of the same math.

A script by nature: the comparison is a second training loop written in plain torch, outside the library.
Measures: milliseconds (wall and process CPU) per training step of ``Trainer.train_epoch`` vs the bare loop,
on random CIFAR-10-shaped images, on the machine it runs on. Latest number (2026-12-01, 2-core CPU, shared,
1 thread, width 1/16, batch 32; benchmarks/RESULTS.md, "GPU readiness"): CPU-time ratio localssl / bare
1.00× for ``clapp++`` (rounds 0.93–1.04) and 1.01× for ``bp-clapp++`` (0.95–1.08).

Where kernel launches dominate (small network, batch 32: a GPU at batch 32, or width 1/16 on CPU as the
stand-in), every Python call, extra kernel and host synchronisation of the framework shows in the step
time. This times, in one process on the same random CIFAR-10-shaped images:

* **localssl**: :meth:`Trainer.train_epoch` itself — views, the rule, the optimizer, the learning-rate
  schedule, the metrics bookkeeping and the one ``steps.csv`` row per ``train.log_every`` steps — over
  an epoch of ``--steps`` steps (``train.max_steps_per_epoch``; ``train.log_every`` = ``--steps``, so one
  row per epoch, as one row per 50 steps in a run);
* **bare**: a loop written in plain torch (and the same kornia augmentation): shuffle, two SimCLR views,
  per-layer forward → AvgPool → ``B`` → CLAPP hinge loss → backward (``clapp++``), or the full forward →
  global pool → ``B`` → hinge → backward (``bp-clapp++``), then one fused AdamW step — on the same
  layers (conv + ReLU + max-pool modules), the same ``B`` shapes, the same optimizer settings, and no
  metrics.

The two alternate epoch by epoch (the order flips every round), so a shared machine's load hits both
alike; the per-round ratio of step times (wall clock, and this process's CPU time, which on a loaded
machine counts the work and not the wait for a core) is reported as median and range.

    OMP_NUM_THREADS=1 python benchmarks/step_overhead.py [--presets clapp++ bp-clapp++] [--rounds 7]
        [--steps 50] [--threads 1] [--results benchmarks/RESULTS.md] [key=value ...]

``key=value`` overrides apply to localssl's side only (e.g. ``train.compile=true``); the defaults are
width 1/16, batch 32, CPU.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from localssl.bench import append_entry, machine_description
from localssl.config import load_config
from localssl.data import ImageData, dataset_info
from localssl.train import Trainer

BASE = ["model.width=0.0625", "train.batch_size=32", "train.device=cpu", "train.progress=false"]


class BareLoop:
    """CLAPP++ / BP-CLAPP++ in plain torch on ``trainer``'s layers, ``B`` shapes and images."""

    def __init__(self, trainer: Trainer, backprop: bool) -> None:
        self.backprop = backprop
        self.images = trainer.images
        self.bs = trainer.cfg.train.batch_size
        self.layers = [layer for layer in trainer.comp.encoder.layers]
        views = trainer.comp.views
        self.augment = views.augment  # the same kornia ops (crop, flip, jitter, grey, blur)
        self.mean, self.std = views.normalize.mean, views.normalize.std
        # the kernels localssl resolved for each objective (AvgPool k, or None: global average)
        objectives = trainer.comp.rule.objectives
        self.kernels = {int(k): o.pool.kernel for k, o in objectives.items()}
        torch.manual_seed(0)
        self.B = {
            int(k): torch.nn.Parameter(o.B[0].maps.weight.detach().clone()) for k, o in objectives.items()
        }  # d_target × d_ref, as nn.Linear stores it
        params = [p for layer in self.layers for p in layer.parameters()] + list(self.B.values())
        t = trainer.cfg.train
        self.opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=float(t.weight_decay), fused=True)
        self.epoch = 0

    def pool(self, h: torch.Tensor, k: int | None) -> torch.Tensor:
        if k is None:
            return h.mean(dim=(2, 3))
        return (h if k == 1 else F.avg_pool2d(h, k, k)).flatten(1)

    def hinge(self, h: torch.Tensor, layer: int, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        z = self.pool(h, self.kernels[layer])
        p = z.detach() @ self.B[layer].t()  # B r with the reference r = z detached
        s_pos = (z[pos] * p).sum(-1)
        s_neg = (z[neg] * p).sum(-1)
        return F.relu(1 - s_pos).mean() + F.relu(1 + s_neg).mean()

    def epoch_of(self, n_steps: int) -> None:
        g = torch.Generator().manual_seed(1000 + self.epoch)
        self.epoch += 1
        perm = torch.randperm(len(self.images), generator=g)
        for step in range(n_steps):
            imgs = self.images[perm[step * self.bs : (step + 1) * self.bs]]
            with torch.no_grad():
                x = imgs.float().div_(255.0)
                x = self.augment(torch.cat([x, x])).clamp_(0.0, 1.0)
                x = (x - self.mean) / self.std
            m = x.shape[0]
            pos = (torch.arange(m) + m // 2) % m
            neg = pos.roll(-1)
            if self.backprop:
                h = x
                for layer in self.layers:
                    h = layer(h)
                self.hinge(h, len(self.layers), pos, neg).backward()
            else:
                h = x
                for i, layer in enumerate(self.layers):
                    h = layer(h.detach())
                    self.hinge(h, i + 1, pos, neg).backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)


def measure(preset: str, overrides: list[str], rounds: int, steps: int, n_images: int) -> dict:
    cfg = load_config(preset, [*BASE, f"train.max_steps_per_epoch={steps}", f"train.log_every={steps}", *overrides])
    info = dataset_info(cfg.data.name)
    g = torch.Generator().manual_seed(0)
    shape = (n_images, info.channels, info.image_size, info.image_size)
    data = ImageData(torch.randint(0, 256, shape, dtype=torch.uint8, generator=g), torch.zeros(n_images).long(), [])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp), data=data)
        bare = BareLoop(Trainer(load_config(preset, BASE), Path(tmp), data=data), cfg.rule.name == "backprop")

        def framework() -> None:
            trainer.train_epoch()
            trainer.epoch += 1

        runs = {"localssl": framework, "bare": lambda: bare.epoch_of(steps)}
        for fn in runs.values():  # warm-up: optimizer state, allocator, kernel caches (and compilation)
            fn()
        wall: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(rounds):
            for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                t0, c0 = time.perf_counter(), time.process_time()
                runs[name]()
                wall[name].append((time.perf_counter() - t0) / steps)
                cpu[name].append((time.process_time() - c0) / steps)
    ratio_wall = [a / b for a, b in zip(wall["localssl"], wall["bare"])]
    ratio_cpu = [a / b for a, b in zip(cpu["localssl"], cpu["bare"])]
    return {
        "preset": preset,
        "ms_localssl": 1e3 * statistics.median(wall["localssl"]),
        "ms_bare": 1e3 * statistics.median(wall["bare"]),
        "ratio_wall": (statistics.median(ratio_wall), min(ratio_wall), max(ratio_wall)),
        "cpu_ms_localssl": 1e3 * statistics.median(cpu["localssl"]),
        "cpu_ms_bare": 1e3 * statistics.median(cpu["bare"]),
        "ratio_cpu": (statistics.median(ratio_cpu), min(ratio_cpu), max(ratio_cpu)),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| preset | localssl ms/step | bare ms/step | ratio (wall) | localssl CPU-ms/step | bare CPU-ms/step "
        "| ratio (CPU time) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        w, c = r["ratio_wall"], r["ratio_cpu"]
        lines.append(
            f"| {r['preset']} | {r['ms_localssl']:.1f} | {r['ms_bare']:.1f} | {w[0]:.2f}× ({w[1]:.2f}–{w[2]:.2f}) "
            f"| {r['cpu_ms_localssl']:.1f} | {r['cpu_ms_bare']:.1f} | {c[0]:.2f}× ({c[1]:.2f}–{c[2]:.2f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["clapp++", "bp-clapp++"], choices=["clapp++", "bp-clapp++"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=50, help="steps per epoch (= per round)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", help="append the table to this Markdown file")
    p.add_argument("--note", default="", help="a sentence added to the results entry")
    args, overrides = p.parse_known_args()
    torch.set_num_threads(args.threads)
    rows = [measure(pr, overrides, args.rounds, args.steps, n_images=args.steps * 32) for pr in args.presets]
    text = table(rows)
    print(text)
    if args.results:
        command = "python benchmarks/step_overhead.py " + " ".join(
            [
                f"--presets {' '.join(args.presets)}",
                f"--rounds {args.rounds}",
                f"--steps {args.steps}",
                f"--threads {args.threads}",
                *overrides,
            ]
        )
        entry = (
            f"\n### {datetime.date.today().isoformat()} — step overhead vs a bare loop: `{command}`\n\n"
            f"Machine: 2-core CPU (shared, loaded); {machine_description()}, torch {torch.__version__}. "
            f"VGG-6 width 1/16, batch 32, CIFAR-10-shaped random images; epochs of {args.steps} steps, "
            f"{args.rounds} alternating rounds after one warm-up epoch each, medians (range over rounds)."
            f"{(' ' + args.note) if args.note else ''}\n\n{text}\n"
        )
        append_entry(Path(args.results), entry)


if __name__ == "__main__":
    main()
