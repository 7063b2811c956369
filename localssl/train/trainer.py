"""One trainer for every recipe: it asks the rule for the gradients and steps the optimizer(s).

The set-up (:meth:`Trainer.__init__`) builds the model, the rule, the optimizers and the step context
once; the loop (:meth:`Trainer.train_epoch`, :meth:`Trainer.fit`) then only draws batches, calls
``rule.step(encoder, views, ctx)``, steps, logs and checkpoints.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.csv`` (one row per epoch),
``steps.csv`` (one row every ``train.log_every`` steps), ``checkpoint.pt`` (written at the end of every
epoch, and mid-epoch every ``train.checkpoint_every`` steps and/or ``train.checkpoint_every_minutes``;
the one before is kept as ``checkpoint.prev.pt``) and ``summary.json``. Every epoch's shuffling and
augmentation are seeded by ``(seed, epoch)``; a mid-epoch checkpoint also holds the position in the
epoch (:class:`~localssl.checkpoint.EpochPosition`), so ``--resume`` continues bit-identically on the
same machine from either.

Under ``torchrun`` (see :mod:`localssl.distributed`) every rank trains on its slice of the global
batch, gradients are averaged over ranks, and rank 0 writes the run directory.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from localssl import distributed
from localssl.build import Components, build, resolve_device
from localssl.checkpoint import (
    CHECKPOINT_FORMAT,
    EpochPosition,
    config_fingerprint,
    load_latest,
    rng_states,
    save_checkpoint,
)
from localssl.config import RunConfig
from localssl.data import ImageData
from localssl.distributed import SINGLE, World
from localssl.linear_probe import FeatureExtractor
from localssl.memory import keep_freed_heap
from localssl.online_probe import OnlineProbe
from localssl.rules.base import Metrics, StepContext
from localssl.tensorboard_log import TensorBoardLog
from localssl.train.fast_path import autocast_for, compile_step, memory_format_for
from localssl.train.metrics import DeviceSums, DivergenceWatch, check_finite, epoch_line, online_probe_due
from localssl.train.optimizers import ONE, StepOptimizers
from localssl.train.setup import RunSetup, check_batch_fits
from localssl.train.stages import EpochPeak, peak_memory_mb
from localssl.train.stop import StopRequested, StopSignals
from localssl.utils import append_csv, atomic_write_json, epoch_seed, machine_name
from localssl.views.base import Normalize, ViewBatch


class Trainer:
    """Set-up of one run (``cfg`` raw, or already a :class:`RunSetup`) and its training loop."""

    def __init__(
        self, cfg: RunConfig | RunSetup, run_dir: Path, data: ImageData | None = None, world: World = SINGLE
    ) -> None:
        setup = cfg if isinstance(cfg, RunSetup) else RunSetup.prepare(cfg, world, data)
        self.cfg, self.world, self.data, self.run_dir = setup.cfg, setup.world, setup.data, Path(run_dir)
        t = self.cfg.train
        self.device = distributed.rank_device(resolve_device(t.device), self.world)
        if self.device.type == "cpu":
            keep_freed_heap()  # a CPU step's freed blocks stay in the process for the next step
        self.n_images = setup.n_images
        self.comp: Components = self.build_components()
        self.images = self.data.images.to(self.device) if self.cfg.data.on_device else self.data.images
        self.labels = self.data.labels.to(self.images.device)
        self.memory_format = memory_format_for(t, self.device)
        self.comp.encoder.to(memory_format=self.memory_format)
        autocast = autocast_for(t.precision, self.device)
        self.cuda_graphs = compile_step(self.comp, t.compile, self.device)
        self.groups = self.comp.rule.layer_groups(self.comp.encoder)
        self.opt = self.make_optimizers()
        self.step_context = StepContext(autocast=autocast, layer_done=self.opt.layer_done, optimizer=self.opt.as_one())
        self.epoch, self.global_step = 0, 0
        self._position: EpochPosition | None = None  # where a loaded mid-epoch checkpoint left the epoch
        self.checkpoint_at: str | None = None  # where in training the last checkpoint written or loaded is
        self._checkpoint_time = time.monotonic()
        self.divergence = DivergenceWatch()
        self.stop = StopSignals()  # SIGTERM / SIGUSR1 while fit() runs: checkpoint, then StopRequested
        self.tensorboard = TensorBoardLog(run_dir) if t.tensorboard and self.world.is_main else None
        # under torchrun rank 0 alone scores the online probe (extraction and fits) and logs it
        self.online_probe = self._online_probe(setup) if t.online_probe and self.world.is_main else None

    def build_components(self) -> Components:
        """The encoder, views and rule of this process (every rank starts from rank 0's weights)."""
        comp = build(self.cfg, self.device)
        distributed.broadcast_module_state([comp.encoder, comp.rule])
        return comp

    def make_optimizers(self) -> StepOptimizers:
        """The optimizer(s) of every trained parameter (:attr:`groups`: by layer)."""
        params = list(self.comp.rule.parameters_to_train(self.comp.encoder))
        return StepOptimizers(self.cfg.train, self.groups, params, self.world)

    def _online_probe(self, setup: RunSetup) -> OnlineProbe:
        t, info = self.cfg.train, setup.info
        n_layers = len(self.comp.encoder)
        kernels = list(info.pool_kernels) if len(info.pool_kernels) == n_layers else [None] * n_layers
        norm = Normalize(info.mean, info.std)
        extractor = FeatureExtractor(self.comp.encoder, norm, kernels, list(range(n_layers))).to(self.device)
        extractor.fast_path(self.step_context.autocast, self.memory_format)  # the training's precision and layout
        return OnlineProbe(
            extractor,
            self.cfg.probe,
            info.num_classes,
            self.images,
            self.labels,
            t.online_probe_train,
            t.online_probe_holdout,
            t.seed,
            frozen=not self.comp.rule.trains_encoder,
        )

    @property
    def optimizers(self) -> dict[int, torch.optim.Optimizer]:
        """The optimizers by layer index (``train.step_each_layer``), else ``{-1: the optimizer}``."""
        return self.opt.by_key

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The single optimizer (``train.step_each_layer=false``)."""
        if self.opt.per_layer:
            raise AttributeError("train.step_each_layer=true: one optimizer per layer, see Trainer.optimizers")
        return self.opt.by_key[ONE]

    # ------------------------------------------------------------------ checkpoints
    def state(self, position: EpochPosition | None = None) -> dict[str, Any]:
        """Everything a resume needs; ``position`` marks a mid-epoch checkpoint."""
        state = {
            "encoder": self.comp.encoder.state_dict(),
            "rule": self.comp.rule.state_dict(),
            "optimizer": self.opt.state(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "format": CHECKPOINT_FORMAT,  # checked by every reader (localssl.checkpoint.check_format)
            "torch_version": str(torch.__version__),
            "config": config_fingerprint(self.cfg),
            **({"online_probe": self.online_probe.state()} if self.online_probe is not None else {}),
            **self.divergence.state(),
        }
        if position is not None:
            state["position"] = position.to_state()
        return state

    def read_checkpoint(self) -> tuple[dict[str, Any], Path]:
        """The run's newest readable checkpoint (:func:`~localssl.checkpoint.load_latest`) and its path."""
        return load_latest(self.run_dir, map_location=self.device)

    def load_network(self, ckpt: dict[str, Any]) -> None:
        """The weights, objectives and optimizer state of a checkpoint."""
        self.comp.encoder.load_state_dict(ckpt["encoder"])
        self.comp.rule.load_state_dict(ckpt["rule"])
        self.opt.load(ckpt["optimizer"])

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self.load_network(ckpt)
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])
        if self.online_probe is not None and "online_probe" in ckpt:
            self.online_probe.load(ckpt["online_probe"])
        self._position = EpochPosition.from_state(ckpt["position"]) if "position" in ckpt else None
        self.checkpoint_at = self._where(self._position)
        self.divergence.load(ckpt)

    def save_checkpoint(self, position: EpochPosition | None = None) -> None:
        if self.world.is_main:
            save_checkpoint(self.state(position), self.run_dir)
        distributed.barrier()
        self.checkpoint_at = self._where(position)
        self._checkpoint_time = time.monotonic()

    def _where(self, position: EpochPosition | None) -> str:
        if position is None:
            return f"end of epoch {self.epoch}, global step {self.global_step}"
        return f"epoch {self.epoch + 1}, step {position.step}, global step {self.global_step}"

    def mid_epoch_checkpoint_due(self, done: int, n_steps: int) -> bool:
        """After ``done`` of the epoch's ``n_steps`` steps: whether a mid-epoch checkpoint is due, every
        ``train.checkpoint_every`` global steps or once ``train.checkpoint_every_minutes`` have passed since
        the last checkpoint. Never after the epoch's last step: the epoch-end checkpoint follows its row."""
        t = self.cfg.train
        if done >= n_steps:
            return False
        if t.checkpoint_every and self.global_step % t.checkpoint_every == 0:
            return True
        minutes = t.checkpoint_every_minutes
        due = bool(minutes) and time.monotonic() - self._checkpoint_time >= 60 * minutes
        if minutes and self.world.distributed and not self.cfg.train.parallel == "layers":
            due = bool(distributed.broadcast_object(due))  # the ranks save together: rank 0's clock decides
        return due

    def stop_due(self, done: int, n_steps: int, logged: bool) -> bool:
        """After ``done`` of the epoch's ``n_steps`` steps: whether a stop signal (:mod:`localssl.train.stop`)
        ends the run here, after a mid-epoch checkpoint. One process: as soon as it came; data-parallel ranks:
        at a ``logged`` row, where they agree (any rank's signal stops them all at the same step). Never after
        the epoch's last step: :meth:`fit` stops after the epoch's own checkpoint."""
        if done >= n_steps or (self.world.distributed and not logged):
            return False
        return self.stop_agreed()

    def stop_agreed(self) -> bool:
        """At an epoch's end: whether a stop signal came (one process) or came to any rank (data-parallel ranks,
        layer-parallel stages), the same answer on every rank."""
        if not self.world.distributed:
            return self.stop.requested
        return any(distributed.all_objects(self.stop.requested))

    def stopped(self) -> StopRequested:
        """The exception that ends a run stopped by a signal, its last checkpoint just written."""
        why = f"stopped by {self.stop.name}" if self.stop.requested else "stopped: another rank received a stop signal"
        return StopRequested(why, self.stop.signum)

    def restore_position(self, n_steps: int, sums: DeviceSums, window: DeviceSums) -> tuple[int, float, int]:
        """Continue the epoch where a loaded mid-epoch checkpoint left it: fill ``sums`` and ``window``, set
        the RNG states, and return (steps already done, seconds already spent, steps summed in ``window``);
        (0, 0.0, 0) without one. The window's count is the checkpoint's own, so a resume with another
        ``train.log_every`` still averages its first row over the steps it holds."""
        position, self._position = self._position, None
        if position is None:
            return 0, 0.0, 0
        position.check_fits(self.epoch, n_steps)
        n_rngs = len(position.ranks_rng) if position.ranks_rng is not None else 1
        if n_rngs != self.world.size:  # the epoch's slices and augmentation streams are those of its ranks
            raise ValueError(
                f"this mid-epoch checkpoint was written by {n_rngs} process(es): resume it with as many "
                f"(now {self.world.size}), or resume from the end-of-epoch checkpoint of another run"
            )
        own_sums, own_window = position.rank_sums(self.world.rank, self.world.size)
        sums.add(own_sums)
        window.add(own_window)
        position.restore_rng(self.device, self.world.rank, self.world.size)
        in_window = position.window_steps
        if in_window is None:  # a checkpoint from before the count was stored: its run's log_every
            in_window = position.step % self.cfg.train.log_every
        return position.step, position.seconds, in_window

    def _kept(self) -> str:
        last = self.run_dir / "checkpoint.pt"
        if last.exists() and self.checkpoint_at is not None:
            return f"the last good checkpoint {last} ({self.checkpoint_at}) is kept"
        return "no checkpoint was written yet"

    def apply_schedule(self, steps_per_epoch: int) -> None:
        """Set every optimizer's learning rate for ``self.global_step`` (see :mod:`localssl.schedule`)."""
        self.opt.set_lr(self.global_step, steps_per_epoch)

    # ------------------------------------------------------------------ one optimisation step
    def optimize(self, views: ViewBatch) -> Metrics:
        """Gradients from the rule, averaged over ranks, then the optimizer step(s)."""
        if self.cuda_graphs:  # a new training iteration: the graphs' previous outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        self.opt.begin_step()
        metrics = self.comp.rule.step(self.comp.encoder, views, self.step_context)
        self.opt.finish_step()
        return metrics

    def make_views(self, idx: torch.Tensor) -> ViewBatch:
        imgs = self.images[idx].to(self.device, non_blocking=True)
        vb = self.comp.views(imgs, self.labels[idx].to(self.device))
        if vb.x.dim() == 4:  # channels_last is a 4-D layout (audio windows are 3-D)
            vb.x = vb.x.contiguous(memory_format=self.memory_format)
        return vb

    def online_probe_accuracy(self, steps_done: int | None = None) -> dict[str, float]:
        """Held-out accuracy (%) of every online read-out, fitted on the encoder as it is after ``steps_done``
        global steps (default: ``self.global_step``); empty without an online probe. Scored once per step."""
        if self.online_probe is None:
            return {}
        return self.online_probe.score(self.global_step if steps_done is None else steps_done)

    # ------------------------------------------------------------------ training
    def steps_per_epoch(self) -> int:
        check_batch_fits(self.cfg, len(self.images), self.world)
        n = len(self.images) // (self.cfg.train.batch_size * self.world.size)
        cap = self.cfg.train.max_steps_per_epoch
        return min(n, cap) if cap else n

    def log_row(self, window: DeviceSums, k_steps: int, where: str) -> dict[str, Any]:
        """The ``steps.csv`` row of the last ``k_steps`` steps (their mean metrics, and the online probe's
        held-out accuracy where due), written by rank 0; raises on a non-finite loss."""
        means = distributed.mean_over_ranks(window.as_dict(), own=("probe_",))
        check_finite(means, where, self._kept())
        row: dict[str, Any] = {"epoch": self.epoch + 1, "step": self.global_step + 1}
        row.update({k: round(v / k_steps, 6) for k, v in zip(means, DeviceSums.read(means))})
        if self.online_probe is not None:  # every row has the columns (csv header); scored every N steps
            scored = online_probe_due(self.cfg.train.online_probe_every or 0, self.global_step + 1, k_steps)
            acc = self.online_probe_accuracy(self.global_step + 1) if scored else {}
            row.update({f"probe_acc_pct_{n}": acc.get(f"probe_acc_pct_{n}", "") for n in self.online_probe.names})
        self.divergence.observe(row)
        if self.world.is_main:
            append_csv(self.run_dir / "steps.csv", row)
            if self.tensorboard is not None:
                self.tensorboard.scalars("step", {**row, "lr": self.opt.lr}, self.global_step + 1)
        return row

    def train_epoch(self) -> dict[str, float]:
        cfg = self.cfg
        seed = epoch_seed(cfg.train.seed, self.epoch)
        torch.manual_seed(distributed.rank_seed(seed, self.world.rank))
        n_steps = self.steps_per_epoch()
        perm = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed)).to(self.images.device)
        self.comp.encoder.train()
        sums, window = DeviceSums(), DeviceSums()
        start, seconds_before, in_window = self.restore_position(n_steps, sums, window)
        bs, log_every = cfg.train.batch_size, cfg.train.log_every
        postfix: dict[str, str] = {}
        probe_s = self.online_probe.seconds if self.online_probe is not None else 0.0
        t0 = time.perf_counter()
        bar = tqdm(
            range(start, n_steps),
            initial=start,
            total=n_steps,
            desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}",
            leave=False,
            disable=not (cfg.train.progress and self.world.is_main),
            file=sys.stderr,
            dynamic_ncols=True,
        )
        for step in bar:
            self.apply_schedule(n_steps)
            idx = perm[distributed.rank_slice(step, bs, self.world)]
            metrics = self.optimize(self.make_views(idx)) if self.comp.rule.trains_encoder else {}
            window.add(metrics)  # on the device, no host sync: the values are read once per logged row
            in_window += 1
            if (step + 1) % log_every == 0 or step + 1 == n_steps:
                sums.add(window.as_dict())
                row = self.log_row(window, in_window, f"epoch {self.epoch + 1}, step {step + 1}")
                postfix.update(_postfix(row))
                if postfix:
                    bar.set_postfix(postfix)
                window, in_window = DeviceSums(), 0
            self.global_step += 1
            stop = self.stop_due(step + 1, n_steps, logged=(step + 1) % log_every == 0)
            if self.mid_epoch_checkpoint_due(step + 1, n_steps) or stop:
                # the steps since the last logged row must be finite too: a checkpoint is always a good one
                check_finite(window.as_dict(), f"epoch {self.epoch + 1}, step {step + 1}", self._kept())
                seconds = time.perf_counter() - t0 + seconds_before
                rng = rng_states(self.device)
                position = EpochPosition(
                    self.epoch, step + 1, seconds, rng, sums.as_dict(), window.as_dict(), in_window
                )
                if self.world.distributed:  # every rank's generators and own metric sums (averaged only when written)
                    own = (rng, _on_cpu(position.sums), _on_cpu(position.window))
                    ranks = distributed.all_objects(own)
                    position.ranks_rng = [r[0] for r in ranks]
                    position.ranks_sums = [r[1] for r in ranks]
                    position.ranks_window = [r[2] for r in ranks]
                self.save_checkpoint(position)
            if stop:
                raise self.stopped()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0 + seconds_before
        epoch_means = distributed.mean_over_ranks(sums.as_dict(), own=("probe_",))
        out = {k: v / n_steps for k, v in zip(epoch_means, DeviceSums.read(epoch_means))}
        out.update(seconds=seconds, images_per_s=n_steps * bs * self.world.size / seconds)
        out.update(self.online_probe_accuracy())  # held-out accuracy at the epoch's end (timed apart)
        if self.online_probe is not None:  # seconds the online probe took this epoch (those mid-epoch in `seconds`)
            out["online_probe_s"] = round(self.online_probe.seconds - probe_s, 3)
        return out

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        history = []
        if not self.comp.rule.trains_encoder and self.online_probe is None:
            self.epoch = cfg.train.epochs  # random init: nothing to train (with an online probe: train only it)
        self.epoch_peak = EpochPeak()
        with self.stop:
            while self.epoch < cfg.train.epochs:
                self.epoch_peak.start()
                row = self.train_epoch()
                self.epoch_peak.stop()
                self.epoch += 1
                history.append(row)
                if self.world.is_main:  # the row before the checkpoint: a crash between them only repeats it, and
                    # resume trims rows past the checkpoint's step, so the CSVs never miss or duplicate a row
                    append_csv(self.run_dir / "metrics.csv", {"epoch": self.epoch, "step": self.global_step, **row})
                self.save_checkpoint()
                if self.world.is_main:
                    if self.tensorboard is not None:
                        self.tensorboard.scalars("epoch", row, self.global_step)
                    print(epoch_line(self.epoch, cfg.train.epochs, row), file=sys.stderr)
                if self.epoch < cfg.train.epochs and self.stop_agreed():
                    raise self.stopped()
        if not (self.run_dir / "checkpoint.pt").exists() or not history:
            self.save_checkpoint()
        summary = {
            "name": cfg.name,
            "epochs": self.epoch,
            "global_step": self.global_step,
            "device": str(self.device),
            "machine": machine_name(),
            "train_images": self.n_images,
            "world_size": self.world.size,
            "images_per_s": (sum(r["images_per_s"] for r in history) / len(history)) if history else None,
            "final": history[-1] if history else {},
        }
        memory = self.peak_memory_per_rank()
        if memory is not None:
            summary["peak_memory_per_rank"] = memory
        if self.world.is_main:
            atomic_write_json(summary, self.run_dir / "summary.json")
        if self.tensorboard is not None:
            self.tensorboard.close()
        return summary

    def peak_memory_per_rank(self) -> list[dict[str, float]] | None:
        """Every process's peak memory in MiB (:func:`~localssl.train.stages.peak_memory_mb`: the run's peak RSS,
        the last epoch's training peak RSS, and the peak CUDA allocation on CUDA), in rank order, for
        summary.json; a collective on every rank."""
        return distributed.all_objects(peak_memory_mb(self.device, getattr(self, "epoch_peak", None)))


def _on_cpu(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in values.items()}


def _postfix(row: dict[str, Any]) -> dict[str, str]:
    """The progress bar's loss (and the online probe's accuracy when the row scored it)."""
    postfix = {}
    if row.get("probe_acc_pct_all", "") != "":
        postfix["probe"] = f"{row['probe_acc_pct_all']:.1f}%"
    losses = [v for k, v in row.items() if k.startswith("loss")]
    if losses:
        postfix["loss"] = f"{sum(losses):.4f}"
    return postfix
