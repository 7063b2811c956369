"""``localssl bench``: speed and memory of a training step, a preset against its backprop counterpart.

Both presets are built in one process on the same network, batch and input size (the overrides apply
to both) and fed random uint8 images of the dataset's shape (``data.name=stl10`` → 3×96×96), so no
data is needed. After ``warmup`` steps each, they are timed in alternating rounds (the order flips
every round), so that a shared machine's load hits both alike; the ratio is taken per round and its
median and spread are reported. Per preset:

* ``images_per_s`` — source images per second of the optimisation step (forward, backward, gradient
  sync, optimizer) on views made beforehand; the median over rounds.
* ``cpu_images_per_s`` (CPU device) — the same per second of this process's CPU time
  (``time.process_time``). With one thread this counts the work of the step and not the time the
  process waited for a core, so it is the robust comparison on a shared machine.
* ``views_per_s`` — source images per second through the view generator alone (2 views each for
  SimCLR): if it is far above ``images_per_s``, augmentation is not the bottleneck.
* ``peak_mem_mb`` — parameters + optimizer state + input batch + a dense ``B``'s kept gradient buffers and
  scratch (:mod:`localssl.objectives.kept`; tensor bytes) + the allocator's peak
  rise during one full training step (gradients start freed, as in training): CUDA
  ``max_memory_allocated``, CPU resident-set high-water mark (:mod:`localssl.memory`).
* ``peak_activation_mb`` — the allocator's peak rise during forward + backward with parameters,
  gradient buffers, optimizer state and the input allocated beforehand, i.e. peak minus those:
  saved activations, activation gradients and temporaries (including a weight gradient between its
  computation and its addition to the buffer).
* ``saved_activation_mb`` — the peak live bytes of tensors autograd saved for backward (parameters
  excluded), measured without the allocator: the strict definition of activation memory.
* ``gflop_per_step`` (forward + backward, ``torch.utils.flop_counter``) and ``tflop_per_s``.
* ``warmup_step_s`` — wall seconds of each of the ``warmup`` first steps, from cold (kernel and oneDNN
  primitive creation, optimizer state, the allocator's first pages), and ``warmup_cost_s`` — what they took
  beyond as many steady-state steps (at the median ``images_per_s``): the warm-up a short run pays.
* ``train_images_per_s`` — views and step together (what an epoch sees), and
  ``hours_per_300_epochs`` — the paper's protocol at that speed on the dataset's pretraining split.

Counterparts (``--vs``): the CLAPP++ family (``clapp++``, ``clapp++nospatial``, ``clapp++dfb``,
``clapp++both``) → ``bp-clapp++``; ``greedy-supervised`` → ``supervised``; any other preset with a
non-backprop rule → the same preset with ``rule.name=backprop`` (its objective at the top layer,
trained end to end). Backprop and frozen presets have none (``--vs none`` skips the comparison).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from localssl.config import RunConfig, load_config
from localssl.data import ImageData, data_info
from localssl.memory import MB, AllocatorPeak, SavedTensorMeter, optimizer_state_bytes, storage_bytes
from localssl.objectives.kept import kept_buffer_bytes
from localssl.rules.base import StepContext
from localssl.train import Trainer
from localssl.utils import cuda_device_name, processor_name

COUNTERPART = {
    "clapp++": "bp-clapp++",
    "clapp++nospatial": "bp-clapp++",
    "clapp++dfb": "bp-clapp++",
    "clapp++both": "bp-clapp++",
    "greedy-supervised": "supervised",
}
BACKPROP_RULES = ("backprop", "frozen")
PRETRAIN_SIZE = {"cifar10": 50_000, "cifar10-mini": 4_000, "stl10": 105_000, "tinyimagenet": 100_000, "mnist": 60_000}


@dataclasses.dataclass(frozen=True)
class Spec:
    """A benchmarked configuration: its label in tables, the preset and the preset's own overrides."""

    label: str
    preset: str
    extra: tuple[str, ...] = ()

    def config(self, overrides: list[str]) -> RunConfig:
        return load_config(self.preset, [*self.extra, *overrides])


def counterpart(preset: str) -> Spec | None:
    """The backprop counterpart of ``preset`` (see the module docstring), or None."""
    if preset in COUNTERPART:
        return Spec(COUNTERPART[preset], COUNTERPART[preset])
    cfg = load_config(preset)
    if cfg.rule.name in BACKPROP_RULES:
        return None
    return Spec(f"{Path(preset).stem}@backprop", preset, ("rule.name=backprop",))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One preset ready to step on random images of the dataset's shape."""

    def __init__(self, spec: Spec, overrides: list[str], n_batches: int = 4) -> None:
        self.spec = spec
        cfg = spec.config(["train.progress=false", *overrides])
        info = data_info(cfg.data)
        bs = cfg.train.batch_size
        g = torch.Generator().manual_seed(cfg.train.seed)
        shape = (bs * n_batches, info.channels, info.image_size, info.image_size)
        data = ImageData(torch.randint(0, 256, shape, dtype=torch.uint8, generator=g), torch.zeros(shape[0]).long(), [])
        self.trainer = Trainer(cfg, Path(tempfile.gettempdir()) / "localssl-bench", data=data)
        self.cfg, self.info, self.batch_size = self.trainer.cfg, info, bs
        self.device = self.trainer.device
        self.batches = [torch.arange(i * bs, (i + 1) * bs, device=self.trainer.images.device) for i in range(n_batches)]
        self._next = 0
        self.params = list(self.trainer.comp.rule.parameters_to_train(self.trainer.comp.encoder))

    def views(self):
        idx = self.batches[self._next % len(self.batches)]
        self._next += 1
        return self.trainer.make_views(idx)

    def step_seconds(self, steps: int) -> tuple[float, float]:
        """Mean wall-clock and process-CPU seconds of one optimisation step (views made beforehand)."""
        ready = [self.views() for _ in range(steps)]
        _sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        for vb in ready:
            self.trainer.optimize(vb)
        _sync(self.device)
        return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps

    def views_seconds(self, reps: int) -> float:
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(reps):
            self.views()
        _sync(self.device)
        return (time.perf_counter() - t0) / reps

    def _free_grads(self) -> None:
        for opt in self.trainer.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def memory(self) -> dict[str, float]:
        """Peak memory of one full training step and peak activation memory of forward + backward."""
        vb = self.views()
        self._free_grads()
        static = storage_bytes(self.params) + optimizer_state_bytes(self.trainer.optimizers.values())
        static += storage_bytes([vb.x]) + kept_buffer_bytes(self.trainer.comp.rule)  # B's kept buffers
        with AllocatorPeak(self.device) as step_peak:
            self.trainer.optimize(vb)
        for p in self.params:
            p.grad = torch.zeros_like(p)
        rule, encoder = self.trainer.comp.rule, self.trainer.comp.encoder
        try:  # the rule alone (its autocast, no optimizer steps): what its activations cost
            ctx = StepContext(autocast=self.trainer.step_context.autocast)
            with AllocatorPeak(self.device) as act_peak, SavedTensorMeter(self.params) as saved:
                rule.step(encoder, vb, ctx)
        finally:
            self._free_grads()
        return {
            "peak_mem_mb": (static + step_peak.peak_bytes) / MB,
            "peak_activation_mb": act_peak.peak_bytes / MB,
            "saved_activation_mb": saved.peak_bytes / MB,
            "param_mb": storage_bytes(self.params) / MB,
            "optimizer_state_mb": optimizer_state_bytes(self.trainer.optimizers.values()) / MB,
        }

    def counted_step(self) -> float | None:
        """One (untimed) training step; returns its forward + backward floating-point operations
        (``torch.utils.flop_counter``: convolutions and matrix products; the optimizer is not counted).
        With ``train.compile`` the step runs uncounted (the first call compiles) and None is returned."""
        if self.cfg.train.compile:
            self.trainer.optimize(self.views())
            return None
        with FlopCounterMode(display=False) as counter:
            self.trainer.optimize(self.views())
        return float(counter.get_total_flops())


def _spread(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def machine_description() -> str:
    if torch.cuda.is_available():
        return cuda_device_name()
    return f"{os.cpu_count()}-core CPU ({processor_name()}), {torch.get_num_threads()} torch threads"


def run_bench(
    presets: list[Spec],
    overrides: list[str],
    rounds: int = 5,
    steps: int = 2,
    warmup: int = 1,
    memory_repeats: int = 1,
    log=print,
) -> dict[str, Any]:
    """Build every preset, warm up (``warmup`` timed steps from cold, then one step counting FLOPs), time
    alternating rounds,
    measure memory ``memory_repeats`` times alternating (the largest value is kept); returns the JSON dict."""
    if warmup < 1:
        raise ValueError("warmup must be >= 1 (optimizer state and kernel caches are created by the first step)")
    runners = [Runner(s, overrides) for s in presets]
    labels = [r.spec.label for r in runners]
    if len(set(labels)) != len(labels):
        raise ValueError(f"benchmark labels must differ, got {labels}")
    gflop: dict[str, float | None] = {}
    warm: dict[str, list[float]] = {}
    for r in runners:  # the first steps from cold (kernels, optimizer state, allocator), each timed
        warm[r.spec.label] = [r.step_seconds(1)[0] for _ in range(warmup)]
        flop = r.counted_step()  # one more, untimed: FLOP counting slows it
        gflop[r.spec.label] = None if flop is None else flop / 1e9
    per_round: dict[str, list[float]] = {r.spec.label: [] for r in runners}
    per_round_cpu: dict[str, list[float]] = {r.spec.label: [] for r in runners}
    views: dict[str, list[float]] = {r.spec.label: [] for r in runners}
    for k in range(rounds):
        for r in runners if k % 2 == 0 else runners[::-1]:
            wall, cpu = r.step_seconds(steps)
            per_round[r.spec.label].append(r.batch_size / wall)
            per_round_cpu[r.spec.label].append(r.batch_size / cpu)
            views[r.spec.label].append(r.batch_size / r.views_seconds(steps))
        log(f"round {k + 1}/{rounds}: " + ", ".join(f"{lab} {v[-1]:.2f} img/s" for lab, v in per_round.items()))
    results: dict[str, dict[str, Any]] = {}
    for r in runners:
        lab = r.spec.label
        row: dict[str, Any] = {"preset": r.spec.preset, "extra_overrides": list(r.spec.extra)}
        if rounds:
            ips, vps = statistics.median(per_round[lab]), statistics.median(views[lab])
            train_ips = 1 / (1 / ips + 1 / vps)  # views are made, then the step runs
            n_pre = PRETRAIN_SIZE.get(r.cfg.data.name)
            row.update(
                images_per_s=ips,
                images_per_s_rounds=per_round[lab],
                views_per_s=vps,
                train_images_per_s=train_ips,
                **(
                    {
                        "cpu_images_per_s": statistics.median(per_round_cpu[lab]),
                        "cpu_images_per_s_rounds": per_round_cpu[lab],
                    }
                    if r.device.type == "cpu"
                    else {}
                ),
                hours_per_300_epochs=(300 * n_pre / train_ips / 3600) if n_pre else None,
                warmup_cost_s=sum(warm[lab]) - len(warm[lab]) * r.batch_size / ips,
            )
        row["warmup_step_s"] = warm[lab]
        results[lab] = row
    for r in runners:
        row = results[r.spec.label]
        row["gflop_per_step"] = gflop[r.spec.label]
        if rounds and row["gflop_per_step"] is not None:
            row["tflop_per_s"] = row["gflop_per_step"] * row["images_per_s"] / r.batch_size / 1e3
    if memory_repeats:
        runs: dict[str, list[dict[str, float]]] = {lab: [] for lab in labels}
        for k in range(memory_repeats):
            for r in runners if k % 2 == 0 else runners[::-1]:
                runs[r.spec.label].append(r.memory())
        for lab in labels:
            for key in runs[lab][0]:
                results[lab][key] = max(m[key] for m in runs[lab])
            results[lab]["memory_runs"] = runs[lab]
    first = runners[0]
    out: dict[str, Any] = {
        "setup": {
            "presets": labels,
            "overrides": overrides,
            "dataset": first.cfg.data.name,
            "input": [first.info.channels, first.info.image_size, first.info.image_size],
            "batch_size": first.batch_size,
            "width": getattr(first.cfg.model, "width", None),
            "device": str(first.device),
            "precision": first.cfg.train.precision,
            "rounds": rounds,
            "steps_per_round": steps,
            "warmup": warmup,
            "machine": machine_description(),
            "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
        },
        "presets": results,
    }
    ratios = {}
    b = labels[-1]
    for a in labels[:-1]:  # every preset against the last one (the counterpart), round by round
        ratio: dict[str, Any] = {"of": f"{a} / {b}"}
        if rounds:
            ratio["images_per_s"] = _spread([x / y for x, y in zip(per_round[a], per_round[b])])
            if "cpu_images_per_s" in results[a]:
                ratio["cpu_images_per_s"] = _spread([x / y for x, y in zip(per_round_cpu[a], per_round_cpu[b])])
        if memory_repeats:
            for key in ("peak_mem_mb", "peak_activation_mb", "saved_activation_mb"):
                ratio[key] = results[a][key] / results[b][key] if results[b][key] else None
        ratios[a] = ratio
    if len(labels) == 2:
        out["ratio"] = ratios[labels[0]]
    elif ratios:
        out["ratios"] = ratios
    return out


def format_table(out: dict[str, Any]) -> str:
    cols = [
        ("images_per_s", "img/s", "{:.2f}"),
        ("cpu_images_per_s", "img/CPU-s", "{:.2f}"),
        ("views_per_s", "views img/s", "{:.0f}"),
        ("peak_mem_mb", "peak MB", "{:.0f}"),
        ("peak_activation_mb", "activation MB", "{:.0f}"),
        ("saved_activation_mb", "saved MB", "{:.0f}"),
        ("gflop_per_step", "GFLOP/step", "{:.1f}"),
        ("tflop_per_s", "TFLOP/s", "{:.3f}"),
        ("warmup_cost_s", "warm-up s", "{:.1f}"),
    ]
    rows = out["presets"]
    present = [c for c in cols if any(c[0] in r for r in rows.values())]
    lines = [
        "| preset | " + " | ".join(c[1] for c in present) + " |",
        "| --- | " + " | ".join("---:" for _ in present) + " |",
    ]
    for lab, r in rows.items():
        cells = [c[2].format(r[c[0]]) if r.get(c[0]) is not None else "–" for c in present]
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    all_ratios = [out["ratio"]] if out.get("ratio") else list(out.get("ratios", {}).values())
    if all_ratios:
        lines.append("")
    for ratio in all_ratios:
        parts = []
        for key, name in (("images_per_s", "images/s"), ("cpu_images_per_s", "images/CPU-s")):
            if key in ratio:
                s = ratio[key]
                parts.append(f"{name} {s['median']:.2f}× (rounds {s['min']:.2f}–{s['max']:.2f})")
        memories = (("peak_activation_mb", "activation"), ("saved_activation_mb", "saved"), ("peak_mem_mb", "peak"))
        for key, name in memories:
            if ratio.get(key) is not None:
                parts.append(f"{name} memory {ratio[key]:.2f}×")
        lines.append(f"Ratio {ratio['of']}: " + "; ".join(parts) + ".  ")
    return "\n".join(lines)


SECTION = "## Scale and speed"


def bench_entry(command: str, out: dict[str, Any], note: str = "") -> str:
    """One dated results entry of a :func:`run_bench` output: the command, the setup, the table."""
    s = out["setup"]
    return (
        f"\n### {s['date']} — `{command}`\n\n"
        f"Machine: {s['machine']}. Device {s['device']}, {s['dataset']} input {'×'.join(map(str, s['input']))}, "
        f"batch {s['batch_size']}, width {s['width']}, precision {s['precision']}; {s['warmup']} warm-up step(s), "
        f"{s['rounds']} alternating rounds of {s['steps_per_round']} steps, medians.{(' ' + note) if note else ''}\n\n"
        f"{format_table(out)}\n"
    )


def append_results(path: Path, command: str, out: dict[str, Any], note: str = "") -> None:
    """Add one dated entry (command, setup, table) at the end of the ``## Scale and speed`` section."""
    append_entry(path, bench_entry(command, out, note))


def append_entry(path: Path, entry: str, section: str | None = SECTION) -> None:
    """The one writer of results files (``benchmarks/RESULTS.md``): insert ``entry`` at the end of
    ``section`` (a ``## `` heading, added at the end of the file if missing), or with ``section=None``
    at the end of the file (entries written piece by piece as a measurement goes). The file is created
    with a ``# Benchmark results`` title if it does not exist."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if section is None:
        text += entry
    else:
        if section not in text:
            text = text.rstrip("\n") + f"\n\n{section}\n"
        start = text.index(section) + len(section)
        nxt = text.find("\n## ", start)
        end = len(text) if nxt < 0 else nxt + 1
        text = text[:end].rstrip("\n") + "\n" + entry + ("\n" + text[end:] if nxt >= 0 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(
    preset: str,
    vs: str | None,
    overrides: list[str],
    out_file: Path | None,
    results_md: Path | None,
    rounds: int,
    steps: int,
    warmup: int,
    memory_repeats: int = 1,
    note: str = "",
    own: list[str] | None = None,
) -> dict[str, Any]:
    """``localssl bench``: ``overrides`` apply to both presets, ``own`` to ``preset`` only."""
    own = list(own or [])
    label = Path(preset).stem if preset.endswith((".yaml", ".yml")) else preset
    specs = [Spec(" ".join([label, *own]), preset, tuple(own))]
    other = counterpart(preset) if vs is None else (None if vs == "none" else Spec(vs, vs))
    if other is not None:
        specs.append(other)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    out = run_bench(specs, overrides, rounds=rounds, steps=steps, warmup=warmup, memory_repeats=memory_repeats, log=log)
    options = [f"--rounds {rounds}", f"--steps {steps}", f"--warmup {warmup}", f"--memory-repeats {memory_repeats}"]
    if torch.device(out["setup"]["device"]).type == "cpu":
        options.append(f"--threads {torch.get_num_threads()}")
    command = "localssl bench " + " ".join(
        [preset, *overrides, *(["--vs", vs] if vs else []), *(f"--own {o}" for o in own), *options]
    )
    out["setup"]["command"] = command
    print(format_table(out))
    if out_file is not None:
        Path(out_file).parent.mkdir(parents=True, exist_ok=True)
        Path(out_file).write_text(json.dumps(out, indent=2) + "\n")
    if results_md is not None:
        append_results(results_md, command, out, note)
    return out
