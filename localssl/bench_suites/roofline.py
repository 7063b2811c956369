"""The ``roofline`` suite: every image preset's training step against what the machine can do.

First the machine's peaks (:func:`measure_peaks`): a 2048³ matrix product, a 256→256 3×3 channels_last
convolution (batch 64, 16×16) and every convolution of the benchmarked encoder at its own shapes, at the
fast path's precision (what ``train.precision=auto`` resolves to: bf16 tensors where the hardware computes
bf16 natively) and at fp32, with one thread and with all threads (CPU; a CUDA device has one entry per
precision). Then, per preset and width (:func:`roofline_row`, each in a fresh process): the step's
forward + backward FLOP counted by ``torch.utils.flop_counter`` (as ``localssl bench``), the median step
time over ``--rounds`` rounds of ``--steps`` steps, the *peak* measured in that process just before the
steps (the better of the matrix product and the convolution at the step's precision and thread count),
``fraction = FLOP / time / peak`` and the profiler's top operators by self time with their share.

Time is the process's CPU time with one thread on a CPU (what the work took, not the wait for a core on
a shared machine; peaks are timed by the same clock), wall time otherwise (several threads, CUDA,
synchronised). Peaks are the best of a few repetitions. A change that adds FLOP cannot raise the fraction
unless it counts those FLOP: compare fractions of the same preset at the same counted FLOP.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from localssl.bench import Runner, Spec, machine_description
from localssl.bench_suites import Options, heading, suite
from localssl.bench_suites.steps import image_presets
from localssl.build import resolve_device
from localssl.config import load_config
from localssl.experiments.engine.local import run_jobs
from localssl.train.fast_path import resolve_fast_path

MATMUL_N = 2048
CONV = (64, 256, 16)  # batch, channels in = out, side (3×3, padding 1)
WIDTHS = (0.25, 1.0)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_clock(device: torch.device) -> bool:
    """Whether times are process CPU seconds (a CPU at one thread) rather than wall seconds."""
    return device.type == "cpu" and torch.get_num_threads() == 1


def _clock(device: torch.device) -> Callable[[], float]:
    return time.process_time if cpu_clock(device) else time.perf_counter


def best_seconds(fn: Callable[[], Any], device: torch.device, reps: int = 3) -> float:
    """The shortest of ``reps`` timed calls of ``fn`` after one untimed call (primitive creation)."""
    clock = _clock(device)
    fn()
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = clock()
        fn()
        _sync(device)
        best = min(best, clock() - t0)
    return best


def counted_flop(fn: Callable[[], Any]) -> float:
    """Floating-point operations of one call of ``fn`` (``torch.utils.flop_counter``)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def op_rate(fn: Callable[[], Any], device: torch.device, reps: int = 3) -> float:
    """GFLOP/s of ``fn``: its counted FLOP over its best time."""
    flop = counted_flop(fn)
    seconds = best_seconds(fn, device, reps)
    if flop <= 0 or seconds <= 0:
        raise ValueError(f"cannot rate an operation of {flop} FLOP in {seconds} s")
    return flop / seconds / 1e9


def matmul_op(n: int, dtype: torch.dtype, device: torch.device) -> Callable[[], torch.Tensor]:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return lambda: a @ b


def conv_op(
    shape: tuple[int, int, int, int], c_out: int, dtype: torch.dtype, device: torch.device, channels_last: bool
) -> Callable[[], torch.Tensor]:
    """A 3×3, padding-1 convolution of an input of ``shape`` (N, C, H, W) to ``c_out`` channels."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(*shape, device=device).to(dtype).contiguous(memory_format=fmt)
    w = torch.randn(c_out, shape[1], 3, 3, device=device).to(dtype).contiguous(memory_format=fmt)
    return lambda: F.conv2d(x, w, padding=1)


def encoder_convs(runner: Runner) -> list[tuple[tuple[int, int, int, int], int]]:
    """(input shape, output channels) of every 3×3 convolution of the runner's encoder on its views."""
    shapes: list[tuple[tuple[int, int, int, int], int]] = []

    def record(mod: nn.Conv2d, args: tuple[torch.Tensor, ...]) -> None:
        shapes.append((tuple(args[0].shape), mod.out_channels))

    hooks = []
    for m in runner.trainer.comp.encoder.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.padding == (1, 1) and m.stride == (1, 1):
            hooks.append(m.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            runner.trainer.comp.encoder(runner.views().x)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def reference_peak(precision: str, device: torch.device, matmul_n: int = MATMUL_N, conv=CONV, reps: int = 3) -> dict:
    """The peak a step is measured against: the better of the ``matmul_n``³ product and the ``conv``
    channels_last convolution at ``precision``, with this process's thread count (GFLOP/s)."""
    dtype = DTYPES[precision]
    b, c, side = conv
    matmul = op_rate(matmul_op(matmul_n, dtype, device), device, reps)
    convolution = op_rate(conv_op((b, c, side, side), c, dtype, device, True), device, reps)
    return {"matmul": matmul, "conv": convolution, "peak": max(matmul, convolution)}


def measure_peaks(
    device: torch.device,
    precisions: list[str],
    threads: list[int],
    encoder_shapes: list[tuple[tuple[int, int, int, int], int]],
    matmul_n: int = MATMUL_N,
    conv=CONV,
    reps: int = 3,
) -> list[dict[str, Any]]:
    """GFLOP/s of the reference shapes and of ``encoder_shapes`` at every precision and thread count
    (the thread count is restored afterwards; a CUDA device ignores it)."""
    before = torch.get_num_threads()
    rows = []
    b, c, side = conv
    try:
        for n in threads if device.type == "cpu" else [before]:
            torch.set_num_threads(n)
            for precision in precisions:
                dtype = DTYPES[precision]
                ops = [
                    (f"matmul {matmul_n}³", matmul_op(matmul_n, dtype, device)),
                    (f"conv {c}→{c} 3×3, {b}×{side}×{side}", conv_op((b, c, side, side), c, dtype, device, True)),
                ]
                for shape, c_out in dict.fromkeys(encoder_shapes):  # each distinct layer shape once
                    label = f"encoder conv {shape[1]}→{c_out}, {shape[0]}×{shape[2]}×{shape[3]}"
                    ops.append((label, conv_op(shape, c_out, dtype, device, True)))
                for label, fn in ops:
                    rate = op_rate(fn, device, reps)
                    rows.append({"op": label, "precision": precision, "threads": n, "gflop_per_s": rate})
    finally:
        torch.set_num_threads(before)
    return rows


def fraction_of_peak(gflop: float, seconds: float, peak_gflop_per_s: float) -> float:
    """``gflop / seconds / peak``: the fraction of the peak a step achieves with its counted FLOP."""
    if not (gflop > 0 and seconds > 0 and peak_gflop_per_s > 0):
        raise ValueError(
            f"a fraction of the peak needs positive FLOP, time and peak; got {gflop} GFLOP, {seconds} s, "
            f"{peak_gflop_per_s} GFLOP/s"
        )
    return gflop / seconds / peak_gflop_per_s


def top_operators(runner: Runner, top: int = 4) -> list[tuple[str, float]]:
    """The ``top`` operators of one profiled step by self time (device time on CUDA) and their share of
    the step's total self time."""
    from torch.profiler import ProfilerActivity, profile

    cuda = runner.device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    vb = runner.views()
    with profile(activities=activities) as prof:
        runner.trainer.optimize(vb)
        _sync(runner.device)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [(e.key, float(getattr(e, key, 0.0))) for e in prof.key_averages()]
    total = sum(t for _, t in events)
    if total <= 0:
        return []
    return [(name, t / total) for name, t in sorted(events, key=lambda e: -e[1])[:top]]


def roofline_row(
    item: tuple[str, float],
    overrides: tuple[str, ...],
    rounds: int,
    steps: int,
    warmup: int,
    matmul_n: int = MATMUL_N,
    conv=CONV,
    top: int = 4,
) -> dict[str, Any]:
    """One preset at one width: counted GFLOP, median step time, the peak measured just before the
    steps, the fraction and the top operators. A preset that cannot be built or stepped gives a row with
    its ``error``."""
    preset, width = item
    try:
        runner = Runner(Spec(preset, preset), [f"model.width={width}", *overrides])
        for _ in range(warmup):
            runner.step_seconds(1)
        flop = runner.counted_step()
        if flop is None:
            raise ValueError("train.compile steps are not counted (the FLOP counter cannot see compiled code)")
        precision = runner.cfg.train.precision
        peak = reference_peak(precision, runner.device, matmul_n, conv)
        times = []
        for _ in range(rounds):
            wall, cpu = runner.step_seconds(steps)
            times.append(cpu if cpu_clock(runner.device) else wall)
        seconds = statistics.median(times)
        gflop = flop / 1e9
        ops = top_operators(runner, top)
    except Exception as err:  # noqa: BLE001 - every preset is tried; its row names the error
        first = str(err).splitlines()[0][:160] if str(err) else ""
        return {"preset": preset, "width": width, "error": f"{type(err).__name__}: {first}"}
    return {
        "preset": preset,
        "width": width,
        "batch": runner.batch_size,
        "precision": precision,
        "channels_last": bool(runner.cfg.train.channels_last),
        "threads": torch.get_num_threads(),
        "clock": "cpu" if cpu_clock(runner.device) else "wall",
        "gflop_per_step": gflop,
        "seconds_per_step": seconds,
        "seconds_rounds": times,
        "gflop_per_s": gflop / seconds,
        "peak": peak,
        "fraction_of_peak": fraction_of_peak(gflop, seconds, peak["peak"]),
        "top_operators": ops,
    }


def three_figures(x: float) -> str:
    """``x`` with at least three significant figures and no exponent (2923, 207, 22.8, 0.0265): the
    table's cells then agree with each other to 0.5 %, at tiny test shapes as at full width."""
    if x == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:.{digits}f}"


def format_row(r: dict[str, Any]) -> str:
    """One Markdown table row of :func:`roofline_row`'s output (times and rates to three figures)."""
    if "error" in r:
        return f"| `{r['preset']}` | {r['width']} | failed: {r['error']} | | | | | |"
    ops = ", ".join(f"`{name}` {share * 100:.0f} %" for name, share in r["top_operators"])
    return (
        f"| `{r['preset']}` | {r['width']} | {three_figures(r['gflop_per_step'])} | "
        f"{three_figures(r['seconds_per_step'] * 1e3)} | {three_figures(r['gflop_per_s'])} | "
        f"{three_figures(r['peak']['peak'])} | {r['fraction_of_peak']:.2f} | {ops} |"
    )


ROW_HEADER = (
    "| preset | width | GFLOP/step | ms/step | GFLOP/s | peak GFLOP/s | of peak "
    "| top operators (share of self time) |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
)


def _widths(overrides: list[str]) -> tuple[list[float], list[str]]:
    """The widths to measure (a ``model.width=`` override picks one) and the other overrides."""
    widths = [float(o.split("=", 1)[1]) for o in overrides if o.startswith("model.width=")]
    rest = [o for o in overrides if not o.startswith("model.width=")]
    return (widths or list(WIDTHS)), rest


@suite("roofline", "peaks of this machine, then every image preset's step: FLOP, time, fraction of peak, top ops")
def roofline(opts: Options) -> dict[str, Any]:
    """Peaks (fast-path precision and fp32, one thread and all threads), then every image preset (or
    ``--presets``) at widths 1/4 and 1 (or the one ``model.width=``), each in a fresh process with
    ``--threads`` torch threads (default 1). Defaults: CIFAR-10 input, batch 32."""
    widths, rest = _widths(opts.overrides)
    overrides = ["data.name=cifar10", "train.batch_size=32", *rest]
    presets = opts.presets or image_presets()
    threads = opts.threads or 1
    if not presets:
        raise ValueError("roofline: no preset to measure")
    train = load_config(presets[0], overrides).train
    device = resolve_device(train.device)
    fast = resolve_fast_path(train, device).precision
    precisions = list(dict.fromkeys([fast, "fp32"]))
    all_threads = sorted({1, os.cpu_count() or 1})
    peaks: dict[float, list[dict[str, Any]]] = {}
    before = torch.get_num_threads()
    for w in widths:
        runner = Runner(Spec(presets[0], presets[0]), [f"model.width={w}", *overrides])
        shapes = encoder_convs(runner)
        del runner
        peaks[w] = measure_peaks(device, precisions, all_threads, shapes)
    torch.set_num_threads(before)
    lines = ["| width | operation | precision | threads | GFLOP/s |", "| ---: | --- | --- | ---: | ---: |"]
    for w, rows in peaks.items():
        lines += [f"| {w} | {p['op']} | {p['precision']} | {p['threads']} | {p['gflop_per_s']:.1f} |" for p in rows]
    opts.emit(
        heading(opts, "roofline: this machine's peaks")
        + f"{machine_description().split(',')[0]}, torch {torch.__version__}; the fast path's precision here: "
        f"{fast}. Best of 3 timed calls after one untimed; channels_last convolutions; "
        f"{'process CPU time at 1 thread, wall time at more' if device.type == 'cpu' else 'wall time'}.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    items = [(p, w) for w in widths for p in presets]
    job = functools.partial(
        roofline_row, overrides=tuple(overrides), rounds=opts.rounds, steps=opts.steps, warmup=opts.warmup
    )
    opts.emit(
        heading(opts, "roofline: every preset's step against the peak")
        + f"{threads} torch thread(s) per process, each preset and width in a fresh process; batch 32 CIFAR-10-"
        f"shaped random images; {opts.warmup} warm-up step(s), the FLOP-counted step, the peak, then "
        f"{opts.rounds} rounds of {opts.steps} step(s), median; then one profiled step. "
        "fraction = GFLOP/step ÷ s/step ÷ peak.\n\n" + ROW_HEADER
    )
    rows: list[dict[str, Any]] = []

    def emit_row(_: int, r: dict[str, Any]) -> None:
        rows.append(r)
        opts.emit(format_row(r) + "\n")

    run_jobs(job, items, 1, names=[f"{p} width {w}" for p, w in items], threads=threads, fresh=True, on_result=emit_row)
    return {"peaks": {str(w): p for w, p in peaks.items()}, "rows": rows, "failed": any("error" in r for r in rows)}
