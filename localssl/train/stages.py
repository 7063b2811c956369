"""Layer-parallel stages (:mod:`localssl.train.pipeline`): where to cut the network, and the messages
between the stages.

:func:`balanced_cuts` cuts per-unit costs into contiguous stages with the smallest slowest stage;
:func:`describe_stages` says what was cut.
:class:`StageLinks` carries, over ``torch.distributed`` point-to-point messages (gloo on CPU, NCCL on CUDA):

* **batches**, stage ``k`` to ``k+1`` (tag 0): a fixed-size header (global step, flags, ``n_images``, ``grid``,
  the sizes of the index tensors, dtype and shape of the activation), the view indices packed in one int64
  tensor (positives, their references, negatives, theirs, labels), and the activation. Every batch of a run has
  the same shapes, so the receive of batch ``t+1`` is posted, sizes and all, before batch ``t`` is computed;
  a sender holds at most ``queue`` batches not yet received downstream (then it waits: the bounded queue).
* **objects**, stage ``k > 0`` to rank 0 (tag 1): a size, then ``torch.save`` bytes (logged rows' metric sums),
  read back with ``weights_only=True``. They are sent without waiting; rank 0 reads them when it needs them.
  A checkpoint part goes as its structure (an object), then each tensor as it is in memory, one at a time
  (:meth:`StageLinks.send_state`): no serialised copy of a stage's state on either side.

Every wait is bounded by ``timeout`` seconds (:func:`~localssl.distributed.wait_for`); a peer that died or
hangs raises :class:`StageLostError` with the pipeline's explanation of what is kept and how to continue.
"""

from __future__ import annotations

import collections
import io
import resource
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from localssl.checkpoint.streamed import Late
from localssl.distributed import PeerLostError, recv_async, send_async, wait_for
from localssl.views.base import ViewBatch

_ACTIVATIONS, _OBJECTS = 0, 1  # message tags: batches to the next stage, rows and checkpoint parts to rank 0
CHECKPOINT_AFTER = 1  # header flag: every stage hands its part to rank 0 after this step
STOP_AFTER = 2  # header flag: stage 0 received a stop signal; every stage stops after this step's checkpoint
_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
_MAX_DIMS = 6
_HEADER = 12 + _MAX_DIMS  # step, flags, n_images, grid (2), sizes of pos/pos_ref/neg/neg_ref/labels, dtype, ndim, shape
MB = 2**20


class StageLostError(RuntimeError):
    """Another stage of a layer-parallel run died, hung past ``train.stage_timeout`` or stopped on its own
    error; the message names it, the last checkpoint, and how to continue."""


def balanced_cuts(costs: list[float], n_stages: int) -> list[int]:
    """Cut ``costs`` (one per unit, in order) into ``n_stages`` contiguous non-empty blocks whose largest sum
    is the smallest possible; returns the number of units before each cut (``n_stages - 1`` of them)."""
    n = len(costs)
    if not 1 <= n_stages <= n:
        raise ValueError(f"cannot cut {n} units into {n_stages} stages")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    # best[k][j]: the smallest largest block when the first j units form k blocks; cut[k][j]: its last cut
    best = [[float("inf")] * (n + 1) for _ in range(n_stages + 1)]
    cut = [[0] * (n + 1) for _ in range(n_stages + 1)]
    best[0][0] = 0.0
    for k in range(1, n_stages + 1):
        for j in range(k, n + 1):
            for i in range(k - 1, j):
                value = max(best[k - 1][i], prefix[j] - prefix[i])
                if value < best[k][j]:
                    best[k][j], cut[k][j] = value, i
    cuts, j = [], n
    for k in range(n_stages, 1, -1):
        j = cut[k][j]
        cuts.append(j)
    return cuts[::-1]


def metric_stage(key: str, bounds: list[int]) -> int:
    """The stage that logs metric ``key`` of a run cut at ``bounds`` (``loss_l3``: layer 3's, 1-based, in the
    stage whose block holds it; a key of no layer, stage 0's)."""
    _, sep, layer = key.rpartition("_l")
    if not (sep and layer.isdigit()):
        return 0
    return next((k for k in range(len(bounds) - 1) if bounds[k] < int(layer) <= bounds[k + 1]), 0)


def describe_stages(bounds: list[int], costs: list[float] | None, allowed: list[int], backend: str) -> str:
    """The line a layer-parallel run prints at start: each stage's layers (``bounds``: ``[0, cut_1, ...,
    n_layers]``) and, when the cuts were measured, each stage's time per batch (``costs``: seconds per unit
    between the ``allowed`` cuts)."""
    parts = []
    edges = [0, *allowed, bounds[-1]]
    for s in range(len(bounds) - 1):
        a, b = bounds[s], bounds[s + 1]
        text = f"stage {s} = layer{'s' if b - a > 1 else ''} {a + 1}{f'-{b}' if b - a > 1 else ''}"
        if costs is not None:
            ms = 1e3 * sum(c for c, lo in zip(costs, edges) if a <= lo < b)
            text += f" ({ms:.1f} ms/batch)"
        parts.append(text)
    how = "measured on rank 0, balanced" if costs is not None else "train.stage_bounds"
    return f"layer-parallel: {len(bounds) - 1} stages ({backend}, {how}): " + ", ".join(parts)


class EpochPeak:
    """The peak resident memory of the last epoch's training alone (Linux): :meth:`start` resets the kernel's
    high-water mark (``/proc/self/clear_refs``) before an epoch, :meth:`stop` reads it (``VmHWM``) after the
    epoch's last step and before its checkpoint; :meth:`run_peak_mb` keeps the whole run's peak across resets.
    Elsewhere (no ``/proc``) the epoch's figure is None."""

    def __init__(self) -> None:
        self.epoch_mb: float | None = None
        self._run_mb = 0.0
        self._reset = False

    def start(self) -> None:
        self._run_mb = self.run_peak_mb()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._reset = True
        except OSError:
            self._reset = False

    def stop(self) -> None:
        self.epoch_mb = None
        if self._reset:
            with open("/proc/self/status") as f:
                hwm = next((line.split()[1] for line in f if line.startswith("VmHWM:")), None)
            self.epoch_mb = None if hwm is None else round(int(hwm) / 1024, 1)  # kB

    def run_peak_mb(self) -> float:
        # getrusage and /proc read the kernel's RSS counters at different moments (they are synced lazily), so
        # the run's figure could read 0.1 MiB below the epoch's own: the run's peak includes the epoch's
        rusage = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        return max(self._run_mb, rusage, self.epoch_mb or 0.0)


def peak_memory_mb(device: torch.device, epoch_peak: EpochPeak | None = None) -> dict[str, float]:
    """This process's peak resident memory (and peak CUDA allocation), in MiB; with ``epoch_peak`` also the
    peak of the last epoch's training alone (``last_epoch_rss_mb``: no model building, no checkpoint)."""
    out: dict[str, Any] = {"rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # KiB
    if epoch_peak is not None:  # the whole run's peak across the resets, and the last epoch's training peak
        out["rss_mb"] = epoch_peak.run_peak_mb()
        out["last_epoch_rss_mb"] = epoch_peak.epoch_mb
    if device.type == "cuda":
        out["cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / MB, 1)
    return out


def _to_bytes(obj: Any, device: torch.device) -> torch.Tensor:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8).to(device)


def _from_bytes(payload: torch.Tensor, device: torch.device) -> Any:
    return torch.load(io.BytesIO(payload.cpu().numpy().tobytes()), map_location=device, weights_only=True)


_TENSOR = "__stage_tensor__"
_SEPARATE = 2**16  # bytes: a tensor this large goes as a message of its own


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _strip(obj: Any, tensors: list[torch.Tensor]) -> Any:
    """``obj`` with every tensor of ``_SEPARATE`` bytes or more replaced by its description (the tensor appended
    to ``tensors``, in order); smaller ones (metric sums, generator states, step counts) stay in ``obj``."""
    if isinstance(obj, torch.Tensor) and obj.numel() * obj.element_size() >= _SEPARATE:
        tensors.append(obj.detach())
        dtype = str(obj.dtype).removeprefix("torch.")
        layout = _channels_last(obj)
        return {_TENSOR: len(tensors) - 1, "shape": list(obj.shape), "dtype": dtype, "channels_last": layout}
    if isinstance(obj, dict):
        return {k: _strip(v, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_strip(v, tensors) for v in obj)
    return obj


def _fill(obj: Any, receive: Callable[[dict[str, Any]], torch.Tensor]) -> Any:
    """``obj`` of :func:`_strip` with each description replaced by ``receive(description)``, in the same order."""
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return receive(obj)
        return {k: _fill(v, receive) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_fill(v, receive) for v in obj)
    return obj


class StageLinks:
    """The messages of stage ``stage`` (its rank) of ``n_stages``; ``explain()`` says, when a peer is lost,
    what is kept and how to continue."""

    def __init__(
        self,
        stage: int,
        device: torch.device,
        memory_format: torch.memory_format,
        queue: int,
        timeout: float,
        explain: Callable[[], str],
    ) -> None:
        self.stage, self.device, self.memory_format = stage, device, memory_format
        self.queue, self.timeout, self.explain = queue, timeout, explain
        self.wire = device if dist.get_backend() == "nccl" else torch.device("cpu")
        self._inflight: collections.deque[tuple[list[Any], tuple[torch.Tensor, ...]]] = collections.deque()
        self._posted: tuple[list[Any], tuple[torch.Tensor, ...]] | None = None
        self._send_sig: tuple[Any, ...] | None = None
        self._recv_sig: tuple[Any, ...] | None = None
        self._objects_out: list[tuple[list[Any], tuple[torch.Tensor, ...]]] = []

    def _fail(self, err: PeerLostError, peer: int, what: str) -> StageLostError:
        return StageLostError(
            f"stage {self.stage}: stage {peer} stopped answering ({what}: {err}); it died, hangs (more than "
            f"train.stage_timeout={self.timeout:g} s), or stopped on an error of its own (see its output). "
            + self.explain()
        )

    def _wait(self, work: Any, peer: int, what: str) -> None:
        try:
            wait_for(work, self.timeout)
        except PeerLostError as err:
            raise self._fail(err, peer, what) from None

    def _post(self, send: bool, tensor: torch.Tensor, peer: int, tag: int, what: str) -> Any:
        try:
            return send_async(tensor, peer, tag) if send else recv_async(tensor, peer, tag)
        except PeerLostError as err:
            raise self._fail(err, peer, what) from None

    def send_batch(self, step: int, flags: int, h: torch.Tensor, views: ViewBatch) -> None:
        """Send the block's output of global step ``step`` and the view metadata to the next stage; wait first
        while ``train.stage_queue`` batches sent before it are not yet received there."""
        peer = self.stage + 1
        while len(self._inflight) >= self.queue:
            works, _ = self._inflight.popleft()
            for w in works:
                self._wait(w, peer, "sending a batch")
        x = h.detach().contiguous()
        ints = [views.pos, views.pos_ref, views.neg, views.neg_ref]
        if views.labels is not None:
            ints.append(views.labels)
        sig = (tuple(x.shape), x.dtype, tuple(t.numel() for t in ints))
        if x.dim() > _MAX_DIMS or x.dtype not in _DTYPES:
            raise ValueError(f"train.parallel=layers cannot send a {x.dim()}-D {x.dtype} activation")
        if self._send_sig is not None and sig != self._send_sig:
            raise ValueError(
                f"train.parallel=layers needs every batch of a run to have the same shapes; step {step + 1} sends "
                f"{sig}, the batch before {self._send_sig}"
            )
        self._send_sig = sig
        grid = views.grid or (-1, -1)
        sizes = [t.numel() for t in ints] + ([-1] if views.labels is None else [])
        shape = list(x.shape) + [0] * (_MAX_DIMS - x.dim())
        header = torch.tensor(
            [step, flags, views.n_images, *grid, *sizes, _DTYPES.index(x.dtype), x.dim(), *shape], dtype=torch.int64
        ).to(self.wire)
        packed = torch.cat([t.reshape(-1).long() for t in ints]).to(self.wire)
        x = x.to(self.wire)
        works = [self._post(True, t, peer, _ACTIVATIONS, "sending a batch") for t in (header, packed, x)]
        self._inflight.append((works, (header, packed, x)))

    def post_recv(self) -> None:
        """Post the receives of the next batch (its sizes are the last batch's: every batch has the same)."""
        header = torch.empty(_HEADER, dtype=torch.int64, device=self.wire)
        tensors: tuple[torch.Tensor, ...] = (header,)
        if self._recv_sig is not None:
            shape, dtype, n_ints = self._recv_sig
            tensors += (
                torch.empty(n_ints, dtype=torch.int64, device=self.wire),
                torch.empty(shape, dtype=dtype, device=self.wire),
            )
        peer = self.stage - 1
        works = [self._post(False, t, peer, _ACTIVATIONS, "receiving a batch") for t in tensors]
        self._posted = (works, tensors)

    def recv_batch(self, step: int) -> tuple[int, ViewBatch]:
        """The flags and the views (``x`` = the previous stage's output) of global step ``step``."""
        if self._posted is None:
            self.post_recv()
        assert self._posted is not None
        (works, tensors), self._posted = self._posted, None
        peer = self.stage - 1
        self._wait(works[0], peer, "receiving a batch")
        head = tensors[0].tolist()
        got, flags, n_images, g0, g1 = head[:5]
        sizes = head[5:10]
        dtype, ndim = _DTYPES[head[10]], head[11]
        shape = tuple(head[12 : 12 + ndim])
        n_ints = sum(s for s in sizes if s > 0)
        sig = (shape, dtype, n_ints)
        if len(tensors) == 1:
            tensors += (
                torch.empty(n_ints, dtype=torch.int64, device=self.wire),
                torch.empty(shape, dtype=dtype, device=self.wire),
            )
            works += [self._post(False, t, peer, _ACTIVATIONS, "receiving a batch") for t in tensors[1:]]
        elif sig != self._recv_sig:
            raise RuntimeError(f"stage {self.stage}: batch {got + 1} changed shape ({sig} after {self._recv_sig})")
        self._recv_sig = sig
        for w in works[1:]:
            self._wait(w, peer, "receiving a batch")
        if got != step:
            raise RuntimeError(f"stage {self.stage}: received global step {got + 1} while at step {step + 1}")
        packed, x = tensors[1].to(self.device), tensors[2].to(self.device)
        parts = list(packed.split([max(s, 0) for s in sizes]))
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)
        views = ViewBatch(
            x=x,
            pos=parts[0],
            pos_ref=parts[1],
            neg=parts[2],
            neg_ref=parts[3],
            labels=parts[4] if sizes[4] >= 0 else None,
            n_images=n_images,
            grid=(g0, g1) if g0 >= 0 else None,
        )
        return flags, views

    def flush_sends(self) -> None:
        while self._inflight:
            works, _ = self._inflight.popleft()
            for w in works:
                self._wait(w, self.stage + 1, "sending a batch")

    def send_object(self, obj: Any) -> None:
        """Send ``obj`` (a row or a checkpoint part) to rank 0 without waiting; :meth:`_flush_objects` waits."""
        payload = _to_bytes(obj, self.wire)
        size = torch.tensor([payload.numel()], dtype=torch.int64).to(self.wire)
        works = [self._post(True, t, 0, _OBJECTS, "sending to stage 0") for t in (size, payload)]
        self._objects_out.append((works, (size, payload)))

    def flush_objects(self) -> None:
        for works, _ in self._objects_out:
            for w in works:
                self._wait(w, 0, "sending to stage 0")
        self._objects_out = []

    def send_state(self, obj: Any) -> None:
        """Send ``obj`` (a checkpoint part) to rank 0 and wait until it is received: its structure as an object,
        then each tensor straight from its own memory, one at a time (no serialised copy of the whole part)."""
        tensors: list[torch.Tensor] = []
        self.send_object(_strip(obj, tensors))
        self.flush_objects()
        for t in tensors:
            wire = (t.permute(0, 2, 3, 1) if _channels_last(t) else t.contiguous()).reshape(-1).to(self.wire)
            self._wait(self._post(True, wire, 0, _OBJECTS, "sending to stage 0"), 0, "sending to stage 0")

    def recv_state(self, src: int, what: str) -> Any:
        """What stage ``src`` sent with :meth:`send_state`, its tensors on this stage's device."""
        return _fill(self.recv_object(src, what), lambda spec: self._recv_tensor(src, spec, what).to(self.device))

    def recv_state_late(self, src: int, what: str) -> tuple[Any, Late]:
        """What stage ``src`` sent with :meth:`send_state`, its large tensors as placeholders (allocated, never
        written: no memory) each paired with the function that receives it, to be called in order (the
        ``late`` of :func:`~localssl.checkpoint.save_checkpoint`)."""
        late: Late = []

        def placeholder(spec: dict[str, Any]) -> torch.Tensor:
            layout = torch.channels_last if spec["channels_last"] else torch.contiguous_format
            t = torch.empty(spec["shape"], dtype=getattr(torch, spec["dtype"]), memory_format=layout)
            late.append((t, lambda: self._recv_tensor(src, spec, what)))
            return t

        return _fill(self.recv_object(src, what), placeholder), late

    def _recv_tensor(self, src: int, spec: dict[str, Any], what: str) -> torch.Tensor:
        dtype, shape = getattr(torch, spec["dtype"]), spec["shape"]
        layout = torch.channels_last if spec["channels_last"] else torch.contiguous_format
        t = torch.empty(shape, dtype=dtype, device=self.wire, memory_format=layout)
        flat = (t.permute(0, 2, 3, 1) if spec["channels_last"] else t).reshape(-1)  # a view of t's memory
        self._wait(self._post(False, flat, src, _OBJECTS, what), src, what)
        return t

    def recv_object(self, src: int, what: str) -> Any:
        size = torch.empty(1, dtype=torch.int64, device=self.wire)
        self._wait(self._post(False, size, src, _OBJECTS, what), src, what)
        payload = torch.empty(int(size.item()), dtype=torch.uint8, device=self.wire)
        self._wait(self._post(False, payload, src, _OBJECTS, what), src, what)
        return _from_bytes(payload, self.device)
