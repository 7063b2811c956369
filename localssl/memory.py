"""Measuring the memory of a training step: allocator peaks, and the activations autograd keeps.

Two independent measurements, used by ``localssl bench``:

* :class:`AllocatorPeak` — how far the device's memory rises above its level at the start of a block.
  CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the bytes
  allocated at the start. CPU (Linux): the resident set's high-water mark. Before the block, freed heap
  pages are returned to the kernel (``malloc_trim(0)``) and the high-water mark is reset to the current
  RSS (``echo 5 > /proc/self/clear_refs``); after it, ``VmHWM − VmRSS(start)`` is the peak rise. A tensor
  counts once its pages are written (what a training step does to every buffer it allocates).
  Whatever existed before the block — parameters, gradient buffers, optimizer state, the input batch,
  other models in the process — is excluded by construction, so an *activation* peak is the rise
  during forward + backward with those allocated beforehand.
* :class:`SavedTensorMeter` — the live bytes of the tensors autograd saves for backward (the
  activations in the strict sense), via ``torch.autograd.graph.saved_tensors_hooks``: every saved
  tensor is wrapped in a handle that adds its storage's bytes while alive (a storage shared by several
  saved tensors counts once; parameters are excluded) and subtracts them when the graph releases it.
  It needs no allocator and gives the same number on any device.
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

MB = 2**20


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one storage count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.numel() > 0:
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def optimizer_state_bytes(optimizers: Iterable[torch.optim.Optimizer]) -> int:
    """Bytes of every tensor in the optimizers' state (Adam's two moments, step counters, ...)."""
    return storage_bytes(v for opt in optimizers for st in opt.state.values() for v in st.values())


# ---------------------------------------------------------------------------------------- allocator
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if m is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(m.group(1))


def cpu_peak_supported() -> bool:
    """Linux with a writable ``/proc/self/clear_refs`` (resettable RSS high-water mark)."""
    try:
        _CLEAR_REFS.write_text("5")
        _status_kb("VmHWM")
        return True
    except (OSError, RuntimeError):
        return False


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: freed heap pages may stay resident (peaks underestimated)
        pass


# glibc's mallopt parameters (malloc.h) and the values :func:`keep_freed_heap` sets.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * MB  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (4 MiB x sizeof(long))
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: about 2 GiB of free heap top kept before trimming


def keep_freed_heap() -> bool:
    """On glibc, keep the memory a training step frees in the process for the next step instead of handing
    it back to the kernel and faulting it in again: blocks up to 32 MiB come from the heap (a fixed
    ``M_MMAP_THRESHOLD``, so glibc's sliding threshold no longer ``munmap``s them) and the heap's free top is
    not trimmed (``M_TRIM_THRESHOLD``). A step's allocations repeat exactly, so the peak resident memory is
    unchanged (measured: benchmarks/RESULTS.md, "The allocator"); what changes is that freed memory stays
    resident until the process ends. Off with ``LOCALSSL_MALLOC=system``. Returns whether it was set."""
    if os.environ.get("LOCALSSL_MALLOC", "") == "system":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator is left alone
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


class AllocatorPeak:
    """``with AllocatorPeak(device) as m: ...`` then ``m.peak_bytes``: the peak rise inside the block."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.peak_bytes = 0
        self._base = 0

    def __enter__(self) -> AllocatorPeak:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.device.type == "cpu":
            if not cpu_peak_supported():
                raise RuntimeError("CPU peak memory needs Linux /proc/self/clear_refs; measure on Linux or CUDA")
            _malloc_trim()
            _CLEAR_REFS.write_text("5")  # VmHWM := VmRSS
            self._base = _status_kb("VmRSS") * 1024
        else:
            raise RuntimeError(f"no peak-memory measurement for device type '{self.device.type}'")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self.peak_bytes = _status_kb("VmHWM") * 1024 - self._base


# ---------------------------------------------------------------------------------------- saved tensors
class _Saved:
    """A saved tensor as autograd holds it; counts its storage while the graph keeps it."""

    __slots__ = ("key", "meter", "tensor")

    def __init__(self, tensor: torch.Tensor, key: int, meter: SavedTensorMeter) -> None:
        self.tensor, self.key, self.meter = tensor, key, meter

    def __del__(self) -> None:
        self.meter._release(self.key)


class SavedTensorMeter:
    """``with SavedTensorMeter(params) as m: loss.backward()`` then ``m.peak_bytes`` / ``m.live_bytes``."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.exclude = {p.untyped_storage().data_ptr() for p in exclude if p.numel() > 0}
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> Any:
        if t.numel() == 0:
            return t
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self.exclude:
            return t
        if key not in self.refs:
            self.refs[key] = 0
            self.sizes[key] = storage.nbytes()
            self.live_bytes += self.sizes[key]
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self.refs[key] += 1
        return _Saved(t, key, self)

    @staticmethod
    def _unpack(packed: Any) -> torch.Tensor:
        return packed.tensor if isinstance(packed, _Saved) else packed

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.live_bytes -= self.sizes.pop(key)

    def __enter__(self) -> SavedTensorMeter:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)
