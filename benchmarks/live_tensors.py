"""Which tensors hold a process's memory: at the peak of one training step, or on each rank after a run's epochs.

    python benchmarks/live_tensors.py step PRESET WIDTH [KEY=VALUE ...]
    python -m torch.distributed.run --nproc_per_node=2 benchmarks/live_tensors.py ranks pretrain PRESET [...]

``step``: one steady training step (batch 32, CIFAR-10's shape, one thread) under a dispatch mode that counts
the bytes of every storage an operator creates while it lives; storages that existed before the step (weights,
gradient buffers kept between steps, optimizer state, the batch) and outputs written into an argument
(``out=``, in-place) are not counted. A storage counts while the tensor that created it lives (a view made from it
later does not extend that, so a step that keeps only a view of a buffer is undercounted). Prints the peak, the
operator at the peak and the largest storages then alive. Memory that operators allocate inside themselves
(oneDNN's reorders) is not seen: compare with the allocator's peak of ``localssl bench --rounds 0``.

``ranks``: runs ``localssl ARGS`` (torchrun sets the ranks) and, after each epoch's training, prints on every
rank the epoch's peak resident memory, the resident memory then and every CPU tensor reachable by the garbage
collector (distinct storages, grouped by shape). benchmarks/RESULTS.md, "Roofline on an AVX2 machine: fp32
layouts, and the layer pipeline's stage 0 taken apart", used both."""

from __future__ import annotations

import collections
import gc
import os
import sys
import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from localssl.memory import MB, _status_kb


class LiveStorages(TorchDispatchMode):
    """Bytes of the storages created under this mode and still alive; the peak and what was alive at it."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[int, str, tuple[int, ...], torch.dtype]] = {}
        self.now = self.peak = 0
        self.at_peak: list[tuple[int, str, tuple[int, ...], torch.dtype]] = []
        self.peak_op = ""

    def _gone(self, ptr: int) -> None:
        self.now -= self.live.pop(ptr, (0,))[0]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        flat = tree_flatten((args, kwargs))[0]
        inputs = {a.untyped_storage().data_ptr() for a in flat if isinstance(a, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr and ptr not in inputs and ptr not in self.live:
                self.live[ptr] = (storage.nbytes(), str(func), tuple(t.shape), t.dtype)
                self.now += storage.nbytes()
                weakref.finalize(t, self._gone, ptr)
        if self.now > self.peak:
            self.peak, self.peak_op = self.now, str(func)
            self.at_peak = sorted(self.live.values(), key=lambda v: -v[0])[:10]
        return out


def step(preset: str, width: str, overrides: list[str]) -> None:
    from localssl.bench import Runner, Spec

    torch.set_num_threads(1)
    base = [f"model.width={width}", "data.name=cifar10", "train.batch_size=32", "train.device=cpu"]
    runner = Runner(Spec(preset, preset), [*base, *overrides])
    runner.step_seconds(2)  # steady state: the kept buffers and the optimizer state exist
    views = runner.views()
    mode = LiveStorages()
    with mode:
        runner.trainer.optimize(views)
    print(f"{preset} width {width}: peak {mode.peak / MB:.1f} MiB of storages created by the step, at {mode.peak_op}")
    for nbytes, op, shape, dtype in mode.at_peak:
        print(f"  {nbytes / MB:7.1f} MiB  {op}  {shape}  {dtype}")


def _tensor_report(rank: str, epoch_mb: float | None) -> None:
    seen: dict[int, tuple[int, tuple[int, ...], torch.dtype]] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu" and not obj.is_meta:
            storage = obj.untyped_storage()
            if storage.data_ptr() and storage.data_ptr() not in seen:
                seen[storage.data_ptr()] = (storage.nbytes(), tuple(obj.shape), obj.dtype)
    groups: collections.Counter = collections.Counter()
    for nbytes, shape, dtype in seen.values():
        groups[(shape, dtype)] += nbytes
    rss = _status_kb("VmRSS") / 1024
    total = sum(v[0] for v in seen.values()) / MB
    lines = [f"[rank {rank}] epoch peak {epoch_mb} MiB, resident now {rss:.0f} MiB, CPU tensors {total:.0f} MiB"]
    lines += [f"[rank {rank}]   {b / MB:7.1f} MiB {shape} {dtype}" for (shape, dtype), b in groups.most_common(6)]
    print("\n".join(lines), file=sys.stderr, flush=True)


def ranks(argv: list[str]) -> None:
    import localssl.train.stages as stages
    from localssl.cli import main

    stop = stages.EpochPeak.stop

    def stop_and_report(self: stages.EpochPeak) -> None:
        stop(self)
        _tensor_report(os.environ.get("RANK", "0"), self.epoch_mb)

    stages.EpochPeak.stop = stop_and_report
    sys.exit(main(argv))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "step":
        step(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "ranks":
        ranks(sys.argv[2:])
    else:
        sys.exit(__doc__)
