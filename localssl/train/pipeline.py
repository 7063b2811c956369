"""Layer-parallel training (``train.parallel=layers``): every stage of the network on its own process.

    torchrun --nproc_per_node=K -m localssl pretrain clapp++ train.parallel=layers [train.stage_bounds=[2,4]]

(across nodes as ``torchrun`` does it: ``--nnodes``, ``--rdzv-endpoint``; gloo on CPU, NCCL on CUDA).

**Stages.** Rank ``k`` holds stage ``k``: a contiguous block of layers cut where the rule allows
(:meth:`~localssl.rules.base.Rule.stage_cuts`), their objectives with their ``B`` and their per-layer
optimizers (``train.step_each_layer``, set by ``train.parallel=layers``), and nothing else: it builds only those
(:mod:`localssl.partial_build`: the one-process initial weights, the other layers ``meta`` tensors from the
start), and only stage 0 loads the training images (it tells the others how many). The cuts
(:mod:`localssl.train.stage_plan`) are ``train.stage_bounds`` (the number of layers before each cut), or, with
``auto``, those that minimise the slowest stage's time per batch, measured on rank 0 before training on a whole
build it frees again (each block's forward + loss + backward on one batch, best of two); they are printed at
start. ``summary.json``'s ``held_per_rank`` says what each stage held (parameter values, training images).

**Schedule.** Stage 0 draws each batch and its views as the one-process trainer does, runs its block (per layer:
forward, loss, backward, optimizer step) and sends the block's output, detached, with the view metadata (the
positive and negative indices, labels, ``n_images``, ``grid``) to stage 1; then it starts the next batch. Stage
``k`` receives batch ``t`` (the receive of ``t+1`` is posted before it computes ``t``), runs its block and sends on.
So stage ``k`` works on batch ``t`` while stage ``k-1`` works on ``t+1``: up to ``K`` whole batches in flight. A
batch is never split: in-batch negatives and every optimizer step are the one-process run's. The queue is
bounded: a stage waits before it sends a batch while ``train.stage_queue`` of its batches are not yet received
downstream, so a stage holds at most ``stage_queue + 2`` boundary activations however long the run.

**Exactness.** Layer ``l``'s input at step ``t`` is layer ``l-1``'s output computed before layer ``l-1``'s update
of step ``t``, in a stage as in the one-process streaming step, and each layer's update depends only on its own
loss. Stage 0 draws from the one-process generator in the one-process order (views, then its own objectives'
draws); stage ``k > 0`` from its own, seeded by ``(seed, epoch, k)``. So for rules whose objectives draw nothing
(clapp++, clapp++nospatial, scff, lpl, ff, ...) K stages give the one-process weights (bitwise on CPU:
``tests/test_pipeline.py``). Objectives that draw (CPC / CLAPP 2021 negatives, ``either_pos_or_neg``) give a run
that is reproducible for its K but draws other negatives above stage 0 than one process does (said at start).

**One run.** Rank 0 holds the run lock and writes config.yaml, steps.csv and metrics.csv with every layer's
columns (each stage sends its metric sums at logged rows; rank 0 reads them a few steps later, so no stage waits
for it) and summary.json (images/s, every process's peak memory, the stages). At a checkpoint (every epoch's
end; mid-epoch with ``train.checkpoint_every[_minutes]``, decided by rank 0 and carried with the batch) every
stage hands its part (weights, objective parameters, per-layer optimizer state, generator state, metric window)
to rank 0, which saves ONE file in the one-process format (optimizer ``{"per_layer": ...}``) with
:func:`~localssl.checkpoint.save_checkpoint`, receiving each large tensor only when its record is written
(:mod:`localssl.checkpoint.streamed`: rank 0 never holds another stage's state): it counts once every part is in it
(:mod:`localssl.train.stage_state`). ``localssl probe`` and ``export`` read it like any other; ``--resume``
continues it with the same K, another K, or on one process, each stage mapping the file and reading its slice.

**Measuring it:** ``torchrun ... train.parallel=layers train.max_steps_per_epoch=N``; ``RUN/summary.json``
holds ``images_per_s`` (rank 0's clock, fill and drain included), ``stages`` and ``peak_memory_per_rank``
(MiB); without ``train.parallel=layers`` and torchrun it is the one-process baseline.
``localssl bench --suite layer-parallel`` runs the comparisons side by side.

**Failures.** Every wait for another stage is bounded by ``train.stage_timeout`` seconds: a stage that dies
(its connection closes: at once) or hangs (after the timeout) stops the others with a :class:`StageLostError`
that names the stage, the last checkpoint and the ``--resume`` command. A stop signal (:mod:`localssl.train.stop`)
to any stage stops the group at one step: stage 0 marks its batch when the signal reaches it or when another stage
reports its own with a logged row; every stage checkpoints after that batch and stops.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from localssl import distributed
from localssl.build import Components
from localssl.checkpoint import EpochPosition, load_latest, rng_states, save_checkpoint
from localssl.distributed import SINGLE
from localssl.partial_build import real_numel
from localssl.rules.base import Metrics
from localssl.train import stage_state
from localssl.train.metrics import DeviceSums, check_finite
from localssl.train.optimizers import StepOptimizers
from localssl.train.setup import RunSetup, check_batch_fits
from localssl.train.stage_plan import build_stage, stage_bounds
from localssl.train.stages import (
    CHECKPOINT_AFTER,
    STOP_AFTER,
    StageLinks,
    StageLostError,
    balanced_cuts,
    metric_stage,
    peak_memory_mb,
)
from localssl.train.trainer import Trainer
from localssl.utils import append_csv, atomic_write_json, epoch_seed
from localssl.views.base import ViewBatch


@dataclasses.dataclass
class _Row:
    """A steps.csv row rank 0 has its own part of and waits for the other stages' parts of."""

    epoch: int
    step: int  # global steps done at the row
    where: str
    sums: dict[str, torch.Tensor]
    k_steps: int


class PipelineTrainer(Trainer):
    """One stage of a layer-parallel run; every rank runs :meth:`fit` (see the module's docstring)."""

    def __init__(self, setup: RunSetup, run_dir: Path) -> None:
        self.stage, self.n_stages = setup.world.rank, setup.world.size
        super().__init__(setup, run_dir)  # builds this stage's layers (build_components) and optimizers
        t = self.cfg.train
        if any(self.groups[-1]):
            raise ValueError(
                f"train.parallel=layers: rule '{self.cfg.rule.name}' trains parameters outside its layers' "
                "objectives, which no stage could own; train it in one process or data-parallel"
            )
        self.step_context = dataclasses.replace(
            self.step_context, layer_done=self.opt.layer_done, optimizer=self.opt.as_one()
        )
        self.links = StageLinks(
            self.stage, self.device, self.memory_format, t.stage_queue, float(t.stage_timeout), self._explain
        )
        self._rows: collections.deque[_Row] = collections.deque()
        self._epoch_sums = DeviceSums()
        self._window = DeviceSums()
        self._checked_draws = False
        self._stages_rng: list[dict[str, torch.Tensor]] | None = None  # a resumed mid-epoch checkpoint's
        self._peer_stop = False  # stage 0: another stage reported a stop signal with a logged row
        # a stage may lag stage 0 by its queue, the batch it computes and the one it prefetches, per stage
        self.lag = (self.n_stages - 1) * (t.stage_queue + 2)

    # ------------------------------------------------------------------ this stage
    def build_components(self) -> Components:
        """Only this stage's layers, objectives and ``B``, with the one-process initial weights (no broadcast:
        every stage draws them from the same seed; :mod:`localssl.partial_build`)."""
        self.bounds = stage_bounds(self.cfg, self.world, self.device, self.data)
        self.layers = range(self.bounds[self.stage], self.bounds[self.stage + 1])
        return build_stage(self.cfg, self.device, self.layers)

    def make_optimizers(self) -> StepOptimizers:
        """The per-layer optimizers of this stage's layers (no gradient all-reduce)."""
        groups = [g if i in self.layers else [] for i, g in enumerate(self.groups)]
        return StepOptimizers(self.cfg.train, groups, [p for g in groups for p in g], SINGLE)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def steps_per_epoch(self) -> int:
        check_batch_fits(self.cfg, self.n_images, self.world)  # the stages share one batch (rank 0's count)
        n = self.n_images // self.cfg.train.batch_size
        cap = self.cfg.train.max_steps_per_epoch
        return min(n, cap) if cap else n

    def _explain(self) -> str:
        kept = (
            f"The last checkpoint ({self.checkpoint_at}) is kept in {self.run_dir}"
            if self.checkpoint_at is not None
            else f"No checkpoint was written yet in {self.run_dir}"
        )
        return f"{kept}. Continue with: torchrun --nproc_per_node=K -m localssl pretrain --resume {self.run_dir}"

    # ------------------------------------------------------------------ rows
    def _row_done(self, where: str, k_steps: int) -> None:
        """A logged row's step: stage 0 queues its part, the others send theirs."""
        sums = self._window.as_dict()
        self._window = DeviceSums()
        if self.stage == 0:
            self._rows.append(_Row(self.epoch + 1, self.global_step, where, sums, k_steps))
            return
        row = {"kind": "row", "step": self.global_step, "sums": {k: v.cpu() for k, v in sums.items()}}
        self.links.send_object({**row, "stop": self.stop.requested})  # a stop signal here: stage 0 stops the group

    def _collect_rows(self, upto: int | None = None) -> None:
        """Rank 0: write the queued rows of global step ``<= upto`` (all with ``None``) once every stage's
        part is in; rows are read ``lag`` steps late, when the last stage has most likely sent them."""
        while self._rows and (upto is None or self._rows[0].step <= upto):
            row = self._rows.popleft()
            sums = dict(row.sums)
            for src in range(1, self.n_stages):
                msg = self.links.recv_object(src, "receiving a logged row")
                if msg["kind"] != "row" or msg["step"] != row.step:
                    raise RuntimeError(f"stage {src} sent {msg['kind']} of step {msg['step']}, expected row {row.step}")
                sums.update(msg["sums"])
                self._peer_stop = self._peer_stop or bool(msg.get("stop"))
            self._write_row(row, sums)

    def _write_row(self, row: _Row, sums: dict[str, torch.Tensor]) -> None:
        check_finite(sums, row.where, self._kept())
        out: dict[str, Any] = {"epoch": row.epoch, "step": row.step}
        out.update({k: round(v / row.k_steps, 6) for k, v in zip(sums, DeviceSums.read(sums))})
        self.divergence.observe(out)
        self._epoch_sums.add(sums)
        append_csv(self.run_dir / "steps.csv", out)
        if self.tensorboard is not None:
            self.tensorboard.scalars("step", {**out, "lr": self.opt.lr}, row.step)

    # ------------------------------------------------------------------ checkpoints
    def _part(self) -> dict[str, Any]:
        """This stage's share of a checkpoint (one-process keys; :func:`~localssl.train.stage_state.part`)."""
        optimizers = self.opt.state()["per_layer"]
        window = self._window.as_dict()
        extra = {"kind": "part", "step": self.global_step, "rng": rng_states(self.device), "window": window}
        return stage_state.part(self.comp.encoder, self.comp.rule, optimizers, self.bounds, self.stage, **extra)

    def save_checkpoint(self, position: EpochPosition | None = None) -> None:
        """Every stage hands its part to rank 0, tensor by tensor, which saves them as one checkpoint
        (``position``: rank 0's mid-epoch position, completed here with every stage's window and generators)."""
        if self.stage != 0:
            self.links.send_state(self._part())
        else:
            self._collect_rows()
            parts, late = [self._part()], []
            for src in range(1, self.n_stages):  # their large tensors come as the file is written (late)
                part, its_late = self.links.recv_state_late(src, "receiving a checkpoint part")
                if part["kind"] != "part" or part["step"] != self.global_step:
                    raise RuntimeError(f"stage {src} sent {part['kind']} of step {part['step']} for a checkpoint")
                parts.append(part)
                late += its_late
            state = self.state(position)  # the one-process format; the stages' parts replace its network
            stage_state.merge_parts(state, parts)
            if position is not None:  # rank 0's position: the whole network's metric sums, stage 0's generators
                window: dict[str, torch.Tensor] = {}
                for p in parts:
                    window.update({k: v + window[k] if k in window else v for k, v in p["window"].items()})
                check_finite(window, self._where(position), self._kept())  # a checkpoint is always a good one
                position.sums, position.window, position.rng = self._epoch_sums.as_dict(), window, parts[0]["rng"]
                state["position"] = position.to_state()
                state["stages_rng"] = [p["rng"] for p in parts]  # read by a resume with as many stages
            save_checkpoint(state, self.run_dir, late=late)
        try:  # every stage goes on once the file is committed (it counts only with every part in it)
            distributed.barrier()
        except RuntimeError as err:
            raise StageLostError(
                f"stage {self.stage}: a stage stopped answering while the checkpoint was saved "
                f"({str(err).splitlines()[0]}). {self._explain()}"
            ) from None
        self.checkpoint_at = self._where(position)
        self._checkpoint_time = time.monotonic()

    def _restore(self, n_steps: int) -> tuple[int, float, int]:
        """Continue a resumed mid-epoch checkpoint's epoch: (steps done, seconds spent, steps in the window)."""
        position, self._position = self._position, None
        if position is None:
            return 0, 0.0, 0
        position.check_fits(self.epoch, n_steps)
        if self.stage == 0:
            position.restore_rng(self.device)  # the one-process generators: a one-process resume reads them too
        elif self._stages_rng is not None and len(self._stages_rng) == self.n_stages:
            rng = self._stages_rng[self.stage]
            torch.set_rng_state(rng["cpu"].cpu())
            if self.device.type == "cuda" and "cuda" in rng:
                torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
        # every stage continues its own layers' window (the steps since the last logged row), so that each sum
        # is added in the uninterrupted run's order (the first row after the checkpoint is then its bitwise)
        own = {k: v for k, v in position.window.items() if metric_stage(k, self.bounds) == self.stage}
        self._window.add({k: v.to(self.device) for k, v in own.items()})
        if self.stage != 0:  # another number of stages: the epoch's seed (only drawing objectives notice)
            return position.step, position.seconds, 0
        self._epoch_sums.add(position.sums)
        in_window = position.window_steps
        if in_window is None:
            in_window = position.step % self.cfg.train.log_every
        return position.step, position.seconds, in_window

    def read_checkpoint(self) -> tuple[dict[str, Any], Path]:
        """The newest checkpoint, mapped from its file (this stage reads only its own slice of it)."""
        return load_latest(self.run_dir, map_location="cpu", mmap=True)

    def load_network(self, ckpt: dict[str, Any]) -> None:
        """This stage's slice of the checkpoint's network and per-layer optimizer state."""
        mine = stage_state.own_slice(ckpt, self.bounds, self.stage)
        for module, key in ((self.comp.encoder, "encoder"), (self.comp.rule, "rule")):
            missing, unexpected = module.load_state_dict(mine[key], strict=False)
            missing = [k for k in missing if stage_state.owner(key, k, self.bounds) == self.stage]
            if missing or unexpected:
                raise RuntimeError(f"the checkpoint's {key} state lacks {missing[:3]} / has unknown {unexpected[:3]}")
        self.opt.load(mine["optimizer"])

    def load_state(self, ckpt: dict[str, Any]) -> None:
        super().load_state(ckpt)
        self._stages_rng = ckpt.get("stages_rng")

    # ------------------------------------------------------------------ training
    def _step_block(self, views: ViewBatch) -> tuple[torch.Tensor, Metrics]:
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        draws = None if self._checked_draws or self.stage == 0 else torch.get_rng_state()
        self.opt.begin_step()
        h, metrics = self.comp.rule.step_layers(self.comp.encoder, views.x, views, self.step_context, self.layers)
        self.opt.finish_step()
        if draws is not None:
            self._checked_draws = True
            if not torch.equal(draws, torch.get_rng_state()):
                print(
                    f"note: the objectives of stage {self.stage} draw random numbers (e.g. negatives): they draw "
                    f"from this stage's own generator, so this run is reproducible with {self.n_stages} stages "
                    "but its draws above stage 0 differ from a one-process run's",
                    file=sys.stderr,
                )
        return h, metrics

    def train_epoch(self) -> dict[str, float]:
        t = self.cfg.train
        first, last = self.stage == 0, self.stage == self.n_stages - 1
        seed = epoch_seed(t.seed, self.epoch)
        torch.manual_seed(distributed.rank_seed(seed, self.stage))  # stage 0: the one-process seed
        n_steps = self.steps_per_epoch()
        perm = None
        if first:
            perm = torch.randperm(self.n_images, generator=torch.Generator().manual_seed(seed))
            perm = perm.to(self.images.device)
        self.comp.encoder.train()
        self._epoch_sums, self._window = DeviceSums(), DeviceSums()
        start, seconds_before, in_window = self._restore(n_steps)
        bs, log_every = t.batch_size, t.log_every
        t0 = time.perf_counter()
        bar = tqdm(
            range(start, n_steps),
            initial=start,
            total=n_steps,
            desc=f"epoch {self.epoch + 1}/{t.epochs}",
            leave=False,
            disable=not (t.progress and first),
            file=sys.stderr,
            dynamic_ncols=True,
        )
        for step in bar:
            self.apply_schedule(n_steps)
            flags = 0
            if first:
                assert perm is not None
                views = self.make_views(perm[step * bs : (step + 1) * bs])
            else:
                flags, views = self.links.recv_batch(self.global_step)
                if step + 1 < n_steps and not flags & STOP_AFTER:
                    self.links.post_recv()  # the next batch arrives while this one computes
            h, metrics = self._step_block(views)
            self._window.add(metrics)
            in_window += 1
            self.global_step += 1
            if first and self.mid_epoch_checkpoint_due(step + 1, n_steps):
                flags |= CHECKPOINT_AFTER
            stop = self.stop.requested or self._peer_stop
            if first and step + 1 < n_steps and stop:  # the epoch's end: fit() stops after it (stop_agreed)
                flags |= CHECKPOINT_AFTER | STOP_AFTER
            if not last:
                self.links.send_batch(self.global_step - 1, flags, h, views)
            del h, views
            if (step + 1) % log_every == 0 or step + 1 == n_steps:
                self._row_done(f"epoch {self.epoch + 1}, step {step + 1}", in_window)
                in_window = 0
            if first:
                self._collect_rows(self.global_step - self.lag)
            if flags & CHECKPOINT_AFTER:
                seconds = time.perf_counter() - t0 + seconds_before
                position = EpochPosition(self.epoch, step + 1, seconds, {}, {}, {}, in_window)
                self.save_checkpoint(position)
            if flags & STOP_AFTER:
                raise self.stopped()
        if first:
            self._collect_rows()
        self.links.flush_sends()
        self._sync()
        seconds = time.perf_counter() - t0 + seconds_before
        out: dict[str, float] = {}
        if first:
            sums = self._epoch_sums.as_dict()
            out = {k: v / n_steps for k, v in zip(sums, DeviceSums.read(sums))}
        out.update(seconds=seconds, images_per_s=n_steps * bs / seconds)
        return out

    def peak_memory_per_rank(self) -> None:
        return None  # gathered in fit, once the stages' last messages are flushed

    def fit(self) -> dict[str, Any]:
        summary = super().fit()
        self.links.flush_objects()
        memory = peak_memory_mb(self.device, getattr(self, "epoch_peak", None))
        held = {"values": real_numel(self.comp.encoder) + real_numel(self.comp.rule), "images": len(self.images)}
        memory, held = zip(*distributed.all_objects((memory, held)))
        stages = [f"{a + 1}-{b}" for a, b in itertools.pairwise(self.bounds)]
        # held_per_rank: the parameter and buffer values and the training images each stage holds in memory
        summary.update(parallel="layers", stages=stages, peak_memory_per_rank=list(memory), held_per_rank=list(held))
        if self.world.is_main:
            atomic_write_json(summary, self.run_dir / "summary.json")
        return summary


__all__ = ["PipelineTrainer", "StageLostError", "balanced_cuts", "peak_memory_mb"]
