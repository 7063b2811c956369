"""Data-parallel training under ``torchrun``: process group, per-rank data slices and seeds, gradient sync.

``torchrun --nproc_per_node N -m localssl pretrain PRESET ...`` starts N processes; each reads its rank
from the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and joins one process group (``nccl``
on CUDA, ``gloo`` on CPU). The design, and why it is correct:

* **Data.** Every rank draws the same per-epoch permutation (seeded by ``(seed, epoch)``); global step
  ``s`` covers ``perm[s·G : (s+1)·G]`` with the global batch ``G = N × train.batch_size``, and rank ``r``
  takes the ``r``-th slice of ``train.batch_size`` images. The slices are disjoint and their union is
  the global batch, so a run of N ranks sees exactly the images a 1-rank run of batch ``G`` sees, and
  ``--resume`` stays exact.
* **Views and negatives.** Each rank augments its own slice with its own seed
  (:func:`rank_seed`, equal to the 1-process seed on rank 0). Negatives are drawn *within each
  rank's batch* (no all-gather of activity across ranks): the contrastive loss of a rank is that of
  a batch of ``train.batch_size`` images.
* **Gradients.** The global loss is the mean of the per-rank losses, so its gradient is the mean of
  the per-rank gradients. Local rules call ``backward`` once per layer (streaming), which
  ``DistributedDataParallel`` cannot follow (its reducer is armed by the wrapped module's
  ``forward`` and expects one backward per forward; the ``B`` matrices live in the rule, not in the
  encoder). So we reduce the gradients ourselves with the same collective DDP uses: as soon as a
  layer's gradients are final (:meth:`Rule.layer_done`), their all-reduce is launched asynchronously
  and runs while the next layer computes (DDP's bucket overlap, with one bucket per layer); before the
  optimizer steps we wait and divide by N (with ``train.step_each_layer``, layer ``l`` is stepped
  when layer ``l+1`` is done, so its all-reduce still overlaps compute). Backprop rules announce
  nothing; their gradients are reduced after the backward. Every rank then applies the same update
  to the same weights.
* **Learning rate.** It is not scaled: ``train.lr`` applies to the global batch ``G``. The paper's
  2e-4 was tuned for 32 images per step; scale it yourself when ``G`` grows (e.g. ×√N for Adam).
* **Logging and checkpoints.** Rank 0 writes the run directory; the logged metrics are averaged over
  ranks (also what the NaN check sees, so every rank stops together).
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import os
import time
from collections.abc import Iterable
from typing import Any

import torch
import torch._dynamo  # imported before any process group exists (below)
import torch.distributed as dist
from torch import nn

# The first optimizer a run builds imports ``torch._dynamo``, and with it ``torch.distributed.nn``, whose
# functions take ``group=group.WORLD`` as a default argument. Imported after ``init_process_group`` they hold
# the default group for the life of the process: ``destroy_process_group`` cannot free it, its gloo worker
# threads outlive the interpreter, and one of them releasing a finished collective's tensors during
# finalisation aborts the process ("terminate called without an active exception", SIGABRT, about one
# 2-stage launch in ten on a 2-core machine). Importing it here, with this module (which every run imports
# before it joins), lets :func:`shutdown` free the group and join its threads. A script that starts its own
# group (``init_process_group``, then ``localssl.train.pretrain``) should import ``localssl.train`` first.

_GOLDEN = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads rank seeds far apart


@dataclasses.dataclass(frozen=True)
class World:
    """Where this process stands: its rank, how many ranks, and its local rank on the node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def world_from_env() -> World:
    """The :class:`World` that ``torchrun`` describes in the environment (1 rank when not launched by it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if size < 1 or not 0 <= rank < size:
        raise RuntimeError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={size}")
    return World(rank, size, local)


def init(world: World, device: torch.device, timeout_s: float | None = None) -> None:
    """Join the process group (``nccl`` for CUDA, ``gloo`` otherwise); a no-op for one rank. ``timeout_s``
    bounds every collective (torch's default: 10 minutes on gloo, 10 on NCCL)."""
    if not world.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, **timeout)


def shutdown() -> None:
    """Leave the process group and free it: its worker threads are joined here, not at interpreter exit. A
    reference to the group inside a reference cycle (a finished trainer's) would keep it, and its gloo threads,
    alive until some later collection: the collection runs here."""
    if dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()


def rank_device(device: torch.device, world: World) -> torch.device:
    """On CUDA every rank uses its own GPU ``cuda:LOCAL_RANK``."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def rank_seed(epoch_seed: int, rank: int) -> int:
    """Augmentation seed of ``rank`` in an epoch; rank 0 keeps the single-process seed."""
    return (epoch_seed + rank * _GOLDEN) % (2**63 - 1)


def rank_slice(step: int, batch_size: int, world: World) -> slice:
    """Positions in the epoch permutation of this rank's images at global step ``step``."""
    start = step * batch_size * world.size + world.rank * batch_size
    return slice(start, start + batch_size)


def broadcast_module_state(modules: Iterable[nn.Module], src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (identical start, whatever the init)."""
    if not dist.is_initialized():
        return
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def all_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` on one process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean_over_ranks(values: dict[str, torch.Tensor], own: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Average a dict of scalar tensors over ranks (same keys on every rank), except the keys starting with a
    prefix in ``own``: those are one rank's own (rank 0's online probe) and pass through unaveraged."""
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(k for k in values if not k.startswith(own))  # startswith(()) is False
    stacked = torch.stack([torch.as_tensor(values[k], dtype=torch.float32) for k in keys])
    dist.all_reduce(stacked)
    stacked /= dist.get_world_size()
    averaged = dict(zip(keys, stacked))
    return {k: averaged.get(k, v) for k, v in values.items()}  # the keys in their order: the CSV columns


class PeerLostError(RuntimeError):
    """A point-to-point message to or from another rank did not complete: that rank died (its connection
    closed), hangs past the timeout, or stopped on an error of its own."""


def wait_for(work: Any, timeout_s: float) -> None:
    """Wait for an ``isend``/``irecv`` at most ``timeout_s`` seconds; :class:`PeerLostError` otherwise. Gloo
    waits with a deadline; NCCL's ``wait`` only orders streams, so the host polls the work until done."""
    try:
        if dist.get_backend() == "gloo":
            work.wait(datetime.timedelta(seconds=timeout_s))
            return
        deadline = time.monotonic() + timeout_s
        while not work.is_completed():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer within {timeout_s:g} s")
            time.sleep(1e-4)
        work.wait()
    except (RuntimeError, TimeoutError) as err:
        raise PeerLostError(str(err).splitlines()[0] if str(err) else type(err).__name__) from err


def send_async(tensor: torch.Tensor, dst: int, tag: int = 0) -> Any:
    """``dist.isend``, a dead peer raised as :class:`PeerLostError`."""
    try:
        return dist.isend(tensor, dst, tag=tag)
    except RuntimeError as err:
        raise PeerLostError(str(err).splitlines()[0]) from err


def recv_async(tensor: torch.Tensor, src: int, tag: int = 0) -> Any:
    """``dist.irecv``, a dead peer raised as :class:`PeerLostError`."""
    try:
        return dist.irecv(tensor, src, tag=tag)
    except RuntimeError as err:
        raise PeerLostError(str(err).splitlines()[0]) from err


class GradSync:
    """Average gradients over ranks, one layer group at a time, overlapping communication with compute.

    :meth:`launch` starts an asynchronous in-place all-reduce (sum) of each gradient of a group;
    :meth:`wait` finishes it and divides by the number of ranks. A parameter with no gradient on this
    rank contributes zeros, so every rank always reduces the same tensors in the same order."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.pending: dict[int, list[tuple[Any, torch.Tensor]]] = {}

    def launch(self, key: int, params: list[nn.Parameter]) -> None:
        if not self.world.distributed or key in self.pending:
            return
        works = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            works.append((dist.all_reduce(p.grad, async_op=True), p.grad))
        self.pending[key] = works

    def wait(self, key: int) -> None:
        for work, grad in self.pending.pop(key, []):
            work.wait()
            grad /= self.world.size

    def wait_all(self) -> None:
        for key in sorted(self.pending):
            self.wait(key)
