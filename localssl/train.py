"""One trainer for every recipe: it asks the rule for the gradients and steps one optimizer.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.csv`` (one row per epoch),
``steps.csv`` (one row every ``train.log_every`` steps), ``checkpoint.pt`` (written atomically at
the end of every epoch, and mid-epoch every ``train.checkpoint_every`` steps and/or
``train.checkpoint_every_minutes``; the one before is kept as ``checkpoint.prev.pt``) and
``summary.json``. Every epoch's shuffling and augmentation are seeded by ``(seed, epoch)``; a mid-epoch
checkpoint also holds the position in the epoch, the augmentation RNG state at that moment and the
epoch's partial metric sums, so ``--resume`` continues bit-identically on the same machine from either.

``train.step_each_layer=true`` gives every layer its own optimizer (the layer's weights and its
objective's parameters) and steps it as soon as the rule announces that layer's gradients final
(:meth:`Rule.layer_done`; layer streaming does so right after the layer's backward), then frees those
gradients. Each parameter sees exactly the update of the single-optimizer run (the optimizers are
per-parameter), so the result is the same; only the peak gradient memory shrinks. The checkpoint
then holds one optimizer state per layer, and resume stays exact.

Under ``torchrun`` (see :mod:`localssl.distributed`) every rank trains on its slice of the global
batch, gradients are averaged over ranks, and rank 0 writes the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from localssl import distributed
from localssl.build import Components, build, check_input_fits, resolve_device
from localssl.checkpoint import load_latest, remove_partial_writes, save_checkpoint
from localssl.config import RunConfig, read_run_config, save_config
from localssl.data import ImageData, data_info, load_split
from localssl.distributed import SINGLE, GradSync, World
from localssl.online_probe import OnlineProbe, holdout_indices
from localssl.rules.base import Metrics
from localssl.schedule import check_schedule, learning_rate
from localssl.tensorboard_log import TensorBoardLog, require_tensorboard
from localssl.utils import append_csv, atomic_write_json, epoch_seed, make_optimizer, trim_csv
from localssl.views.base import ViewBatch
from localssl.views.simclr import Normalize

_EPOCH_PRINTED = ("images_per_s", "probe_acc_all")  # printed with the losses at each epoch's end


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept untouched."""


RESUME_OVERRIDABLE = {
    "train.epochs",
    "train.device",
    "train.progress",
    "train.log_every",
    "train.max_steps_per_epoch",
    "train.checkpoint_every",
    "train.checkpoint_every_minutes",
    "data.root",
}


def config_fingerprint(cfg: RunConfig) -> str:
    """The settings a checkpoint was trained under, as sorted JSON of ``section.key`` values, without the
    keys that may change on resume (:data:`RESUME_OVERRIDABLE`) and ``out_dir``."""
    flat: dict[str, Any] = {}
    for section, value in cfg.to_dict().items():
        if isinstance(value, dict):
            flat.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            flat[section] = value
    keep = {k: v for k, v in flat.items() if k not in RESUME_OVERRIDABLE and k != "out_dir"}
    return json.dumps(keep, sort_keys=True, default=str)


def check_config_unchanged(ckpt: dict[str, Any], cfg: RunConfig, run_dir: Path) -> None:
    """Refuse a resume whose ``config.yaml`` was edited by hand since the checkpoint was written (the
    optimizer state would silently keep the old settings while the config says otherwise)."""
    if "config" not in ckpt:  # checkpoints written before the config was stored in them
        return
    then, now = json.loads(ckpt["config"]), json.loads(config_fingerprint(cfg))
    changed = sorted(
        k
        for k in then.keys() | now.keys()
        if then.get(k) != now.get(k) and not (k not in then and now[k] == _default_setting(cfg, k))
    )
    if changed:
        diffs = "; ".join(f"{k}: checkpoint {then.get(k)!r}, config.yaml {now.get(k)!r}" for k in changed)
        raise ValueError(
            f"{run_dir / 'config.yaml'} differs from the config its checkpoint was trained with ({diffs}). "
            "Restore those values to resume exactly, or start a new run with `localssl pretrain`."
        )


def _default_setting(cfg: RunConfig, key: str) -> Any:
    """The default of ``section.key`` as it appears in :func:`config_fingerprint` (a key added to the library
    after a checkpoint was written is absent from it: the run was trained with that key's default)."""
    section, _, name = key.partition(".")
    value = getattr(cfg, section, None)
    for f in dataclasses.fields(value) if dataclasses.is_dataclass(value) else ():
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return json.loads(json.dumps(f.default, default=str))
            if f.default_factory is not dataclasses.MISSING:
                return json.loads(json.dumps(f.default_factory(), default=str))
    return dataclasses.MISSING


def check_world(cfg: RunConfig, world: World) -> None:
    """Mid-epoch checkpoints hold one process's augmentation RNG state: refuse them under ``torchrun``."""
    if world.distributed and (cfg.train.checkpoint_every or cfg.train.checkpoint_every_minutes):
        raise ValueError(
            "train.checkpoint_every / train.checkpoint_every_minutes (mid-epoch checkpoints) are not "
            "supported under torchrun (every rank's augmentation RNG state would have to be saved); "
            "unset them there: checkpoints are then written at the end of every epoch"
        )


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Fill dataset-dependent ``auto`` values that the trainer itself uses; for ``data.name=folder``
    also the normalisation computed from the images (stored in config.yaml, so the probe and a resume
    normalise as the encoder was trained, even after images are added)."""
    info = data_info(cfg.data)
    train = cfg.train
    check_schedule(train.schedule, train.warmup_epochs, train.epochs)
    if train.tensorboard:
        require_tensorboard()
    if train.weight_decay == "auto":
        train = dataclasses.replace(train, weight_decay=info.weight_decay)
    data = cfg.data
    if data.name == "folder":  # any image size can come: check the encoder takes it
        check_input_fits(cfg, info)
        root = str(Path(data.root).expanduser().resolve())  # the probe may run from another directory
        data = dataclasses.replace(data, root=root, mean=list(info.mean), std=list(info.std))
    return dataclasses.replace(cfg, train=train, data=data)


def check_online_probe(cfg: RunConfig, data: ImageData, world: World = SINGLE) -> None:
    """Refuse ``train.online_probe=true`` where it cannot run, before anything is written."""
    if not cfg.train.online_probe:
        return
    info = data_info(cfg.data)
    why = None
    if info.kind != "image":
        why = f"{cfg.data.name} is a {info.kind} dataset (frame labels); use `localssl probe` after training"
    elif cfg.views.name == "patch_grid":
        why = "patch_grid views read out the average over image patches; use `localssl probe` after training"
    elif world.distributed:
        why = "it runs in one process only (each rank would train its own read-outs); drop it under torchrun"
    elif not bool((data.labels >= 0).any()):
        why = f"the pretraining split of {cfg.data.name} has no labels (e.g. STL-10 unlabeled)"
    if why:
        raise ValueError(f"train.online_probe=true is not available here: {why}. Set train.online_probe=false.")


def load_pretrain_data(cfg: RunConfig) -> ImageData:
    info = data_info(cfg.data)
    split = info.pretrain_split if cfg.data.pretrain_split == "auto" else cfg.data.pretrain_split
    data = load_split(cfg.data.name, split, cfg.data.root, info)
    if cfg.data.train_subset is not None and cfg.data.train_subset < len(data):
        g = torch.Generator().manual_seed(cfg.train.seed)
        data = data.subset(torch.randperm(len(data), generator=g)[: cfg.data.train_subset])
    return data


def new_run_dir(cfg: RunConfig) -> Path:
    base = Path(cfg.out_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = base / f"{cfg.name}-{stamp}"
    k = 1
    while run.exists():
        k += 1
        run = base / f"{cfg.name}-{stamp}-{k}"
    run.mkdir(parents=True)
    return run


def compile_step(comp: Components, mode: bool | str, device: torch.device) -> bool:
    """``train.compile``: ``torch.compile`` every layer and every layer's objective, i.e. the per-layer
    step ``h = layer(x); loss = objective(h, refs)`` (and its backward) of the local rules, fused by
    inductor into few kernels. ``reduce-overhead`` also records each compiled piece as a CUDA graph
    (one launch per piece instead of one per kernel); that needs CUDA: on another device it compiles
    without graphs and says so. Returns whether CUDA graphs are in use."""
    if not mode:
        return False
    graphs = mode == "reduce-overhead" and device.type == "cuda"
    if mode == "reduce-overhead" and not graphs:
        print(
            f"note: train.compile=reduce-overhead records CUDA graphs, which need a CUDA device; on {device.type} "
            "the layers and objectives are compiled without them (as train.compile=true)",
            file=sys.stderr,
        )
    modules = [*comp.encoder.layers, *getattr(comp.rule, "objectives", {}).values()]
    for module in modules:
        module.compile(mode="reduce-overhead" if graphs else None)
    return graphs


class DeviceSums:
    """Running sums of the rule's per-step metrics, kept on the training device: one ``stack`` and one
    ``add`` per step whatever the number of metrics, and no host synchronisation (no ``.item()``,
    ``float()`` or ``bool()`` of a device tensor); :meth:`read` copies them to the host, once per
    logged row. A step whose metric names differ from the sums' (no rule does that today) is added
    name by name."""

    def __init__(self) -> None:
        self.keys: tuple[str, ...] = ()
        self.total: torch.Tensor | None = None

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        if not metrics:
            return
        keys = tuple(metrics)
        vec = torch.stack([v.detach().float() for v in metrics.values()])
        if self.total is None:
            self.keys, self.total = keys, vec
        elif keys == self.keys:
            self.total += vec
        else:
            merged = self.as_dict()
            for k, v in zip(keys, vec):
                merged[k] = merged[k] + v if k in merged else v
            self.keys, self.total = tuple(merged), torch.stack(list(merged.values()))

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.total is None else dict(zip(self.keys, self.total))

    @staticmethod
    def read(values: dict[str, torch.Tensor]) -> list[float]:
        """The values on the host, in one device-to-host copy."""
        return torch.stack(list(values.values())).tolist() if values else []


class _Together:
    """The per-layer optimizers (``train.step_each_layer``) seen as one, for rules that step the weights
    themselves inside :meth:`Rule.step` (incremental predictive coding)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, data: ImageData | None = None, world: World = SINGLE) -> None:
        cfg = resolve_config(cfg)
        check_world(cfg, world)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.world = world
        self.device = distributed.rank_device(resolve_device(cfg.train.device), world)
        self.comp: Components = build(cfg, self.device)
        distributed.broadcast_module_state([self.comp.encoder, self.comp.rule])
        self.data = data if data is not None else load_pretrain_data(cfg)
        self.images = self.data.images.to(self.device) if cfg.data.on_device else self.data.images
        self.labels = self.data.labels.to(self.images.device)
        cuda = self.device.type == "cuda"
        use_cl = cfg.train.channels_last if cfg.train.channels_last != "auto" else cuda
        self.memory_format = torch.channels_last if use_cl else torch.contiguous_format
        self.comp.encoder.to(memory_format=self.memory_format)
        if cfg.train.precision == "bf16":
            dev = self.device.type
            self.comp.rule.autocast = lambda: torch.autocast(dev, dtype=torch.bfloat16)
        elif cfg.train.precision != "fp32":
            raise ValueError(f"train.precision must be fp32 or bf16, got '{cfg.train.precision}'")
        self.cuda_graphs = compile_step(self.comp, cfg.train.compile, self.device)
        self.groups = self.comp.rule.layer_groups(self.comp.encoder)
        t = cfg.train
        if t.step_each_layer:
            self.optimizers = {
                i: make_optimizer(t.optimizer, g, t.lr, float(t.weight_decay), t.momentum)
                for i, g in enumerate(self.groups)
                if g
            }
        else:
            params = list(self.comp.rule.parameters_to_train(self.comp.encoder))
            self.optimizers = {-1: make_optimizer(t.optimizer, params, t.lr, float(t.weight_decay), t.momentum)}
        self.sync = GradSync(world)
        self._layers_done: set[int] = set()
        self._pending_steps: list[int] = []
        self.comp.rule.on_layer_done = self._layer_done
        # Rules that update the weights several times per batch (incremental PC) step these themselves.
        self.comp.rule.attach_optimizer(
            self.optimizers[-1] if -1 in self.optimizers else _Together(list(self.optimizers.values()))
        )
        self.epoch = 0
        self.global_step = 0
        self._position: dict[str, Any] | None = None  # where a loaded mid-epoch checkpoint left the epoch
        self._checkpoint_at: str | None = None  # where in training the last checkpoint written or loaded is
        self._checkpoint_time = time.monotonic()
        self._logged_losses: list[float] = []
        self._divergence_warned = False
        self.tensorboard = TensorBoardLog(run_dir) if cfg.train.tensorboard and world.is_main else None
        self.online_probe: OnlineProbe | None = None
        if t.online_probe:
            check_online_probe(cfg, self.data, world)
            info = self.comp.info
            n_layers = len(self.comp.encoder)
            kernels = list(info.pool_kernels) if len(info.pool_kernels) == n_layers else [None] * n_layers
            norm = Normalize(info.mean, info.std).to(self.device)
            self.online_probe = OnlineProbe(
                self.comp.encoder, norm, kernels, info.num_classes, t.online_probe_lr, t.seed
            )
            self.online_probe.to(self.device)
            held = holdout_indices(self.data.labels, t.online_probe_holdout, t.seed).to(self.images.device)
            self.probe_holdout = held
            trainable = self.labels >= 0
            trainable[held] = False
            self.probe_trainable = trainable

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The single optimizer (``train.step_each_layer=false``)."""
        if -1 not in self.optimizers:
            raise AttributeError("train.step_each_layer=true: one optimizer per layer, see Trainer.optimizers")
        return self.optimizers[-1]

    # ------------------------------------------------------------------ checkpoints
    def state(self, position: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything a resume needs; ``position`` (see :meth:`epoch_position`) marks a mid-epoch one."""
        state = {
            "encoder": self.comp.encoder.state_dict(),
            "rule": self.comp.rule.state_dict(),
            "optimizer": (
                self.optimizers[-1].state_dict()
                if -1 in self.optimizers
                else {"per_layer": {str(i): o.state_dict() for i, o in self.optimizers.items()}}
            ),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "torch_version": str(torch.__version__),
            "config": config_fingerprint(self.cfg),
            **({"online_probe": self.online_probe.state()} if self.online_probe is not None else {}),
            "logged_losses": self._logged_losses[-self.DIVERGENCE_WINDOW :],
            "divergence_warned": self._divergence_warned,
        }
        if position is not None:
            state["position"] = position
        return state

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self.comp.encoder.load_state_dict(ckpt["encoder"])
        self.comp.rule.load_state_dict(ckpt["rule"])
        state = ckpt["optimizer"]
        if ("per_layer" in state) != (-1 not in self.optimizers):
            raise ValueError("the checkpoint and train.step_each_layer disagree; resume with the run's own setting")
        if -1 in self.optimizers:
            self.optimizers[-1].load_state_dict(state)
        else:
            for i, opt in self.optimizers.items():
                opt.load_state_dict(state["per_layer"][str(i)])
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])
        if self.online_probe is not None and "online_probe" in ckpt:
            self.online_probe.load(ckpt["online_probe"], self.images[:2].to(self.device))
        self._position = ckpt.get("position")
        self._checkpoint_at = self._where(self._position)
        self._logged_losses = [float(v) for v in ckpt.get("logged_losses", [])]
        self._divergence_warned = bool(ckpt.get("divergence_warned", False))

    def save_checkpoint(self, position: dict[str, Any] | None = None) -> None:
        if self.world.is_main:
            save_checkpoint(self.state(position), self.run_dir)
        distributed.barrier()
        self._checkpoint_at = self._where(position)
        self._checkpoint_time = time.monotonic()

    def _where(self, position: dict[str, Any] | None) -> str:
        if position is None:
            return f"end of epoch {self.epoch}, global step {self.global_step}"
        return f"epoch {self.epoch + 1}, step {position['step']}, global step {self.global_step}"

    # ------------------------------------------------------------------ mid-epoch checkpoints
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
        return bool(minutes) and time.monotonic() - self._checkpoint_time >= 60 * minutes

    def _rng_states(self) -> dict[str, torch.Tensor]:
        """The generators the views and rules draw from (uint8 tensors, loadable with weights_only)."""
        states = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def epoch_position(self, done: int, sums: DeviceSums, window: DeviceSums, seconds: float) -> dict[str, Any]:
        """The state of the epoch in progress after ``done`` steps: enough to continue it exactly (the
        permutation is rebuilt from ``(seed, epoch)``; the augmentation RNG is restored from here)."""
        return {
            "epoch": self.epoch,
            "step": done,
            "seconds": seconds,
            "rng": self._rng_states(),
            "sums": sums.as_dict(),  # the steps up to the last logged row
            "window": window.as_dict(),  # the steps since
        }

    def restore_position(self, n_steps: int, sums: DeviceSums, window: DeviceSums) -> tuple[int, float]:
        """Continue the epoch where a loaded mid-epoch checkpoint left it: fill ``sums`` and ``window``, set
        the RNG states, and return (steps already done, seconds already spent). (0, 0.0) without one."""
        position, self._position = self._position, None
        if position is None:
            return 0, 0.0
        done = int(position["step"])
        if int(position["epoch"]) != self.epoch or not 0 < done < n_steps:
            raise ValueError(
                f"the checkpoint stopped after step {done} of epoch {int(position['epoch']) + 1}, which does not "
                f"fit epoch {self.epoch + 1} of {n_steps} steps: resume with the run's own "
                "train.max_steps_per_epoch and data"
            )
        sums.add(position["sums"])
        window.add(position["window"])
        torch.set_rng_state(position["rng"]["cpu"].cpu())  # map_location moved it to the device
        if self.device.type == "cuda":
            if "cuda" not in position["rng"]:
                raise ValueError("this mid-epoch checkpoint was written on the CPU: resume it with train.device=cpu")
            torch.cuda.set_rng_state(position["rng"]["cuda"].cpu(), self.device)
        return done, float(position["seconds"])

    # ------------------------------------------------------------------ one optimisation step
    def _layer_done(self, index: int) -> None:
        """Layer ``index``'s gradients are final: start their all-reduce; with per-layer optimizers, step
        it (one process: at once; several: one layer later, so its all-reduce overlaps the next layer)."""
        self._layers_done.add(index)
        self.sync.launch(index, self.groups[index])
        if index in self.optimizers:
            self._pending_steps.append(index)
            keep = 1 if self.world.distributed else 0
            while len(self._pending_steps) > keep:
                self._step_layer(self._pending_steps.pop(0))

    def _step_layer(self, index: int) -> None:
        self.sync.wait(index)
        self.optimizers[index].step()
        self.optimizers[index].zero_grad(set_to_none=True)

    def optimize(self, views: ViewBatch) -> Metrics:
        """Gradients from the rule, averaged over ranks, then the optimizer step(s)."""
        if self.cuda_graphs:  # a new training iteration: the graphs' previous outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self._layers_done, self._pending_steps = set(), []
        metrics = self.comp.rule.step(self.comp.encoder, views)
        for index in range(len(self.groups)):  # rules that do not announce layers (backprop) and the rest group
            if index not in self._layers_done:
                self._layer_done(index)
        while self._pending_steps:
            self._step_layer(self._pending_steps.pop(0))
        if -1 in self.optimizers:
            self.sync.wait_all()
            self.optimizers[-1].step()
        return metrics

    def make_views(self, idx: torch.Tensor) -> ViewBatch:
        imgs = self.images[idx].to(self.device, non_blocking=True)
        vb = self.comp.views(imgs, self.labels[idx].to(self.device))
        if vb.x.dim() == 4:  # channels_last is a 4-D layout (audio windows are 3-D)
            vb.x = vb.x.contiguous(memory_format=self.memory_format)
        return vb

    # ------------------------------------------------------------------ training
    def steps_per_epoch(self) -> int:
        global_batch = self.cfg.train.batch_size * self.world.size
        n = len(self.images) // global_batch
        if n == 0:
            raise ValueError(
                f"{len(self.images)} training images are fewer than one global batch of {global_batch} "
                f"({self.world.size} rank(s) × train.batch_size={self.cfg.train.batch_size}); "
                "lower train.batch_size or raise data.train_subset"
            )
        cap = self.cfg.train.max_steps_per_epoch
        return min(n, cap) if cap else n

    DIVERGENCE_FACTOR = 100.0  # warn when the logged loss exceeds this many times its running median
    DIVERGENCE_WINDOW = 20  # logged rows the running median is taken over (at least 5 before any warning)

    def check_divergence(self, row: dict[str, Any]) -> None:
        """Warn (once per run) when the summed magnitude of a logged row's losses grows by two orders of
        magnitude over its running median: the run is diverging (e.g. ``train.lr`` too high) even though
        the losses are still finite. Uses the values already logged, so it adds no device sync."""
        total = sum(abs(v) for k, v in row.items() if k.startswith("loss"))
        history = self._logged_losses
        recent = history[-self.DIVERGENCE_WINDOW :]
        history.append(total)
        if self._divergence_warned or len(recent) < 5:
            return
        median = sorted(recent)[len(recent) // 2]
        if median > 0 and total > self.DIVERGENCE_FACTOR * median:
            self._divergence_warned = True
            print(
                f"warning: the loss ({total:.3g}) at epoch {row['epoch']}, step {row['step']} is "
                f"{total / median:.0f}x its running median ({median:.3g}): the run is diverging. "
                "Fix: lower train.lr (or use train.schedule=cosine with warmup) and start again.",
                file=sys.stderr,
            )

    def check_finite(self, metrics: dict[str, torch.Tensor], where: str) -> None:
        losses = {k: v for k, v in metrics.items() if k.startswith("loss")}
        if not losses:
            return
        stacked = torch.stack([v.float() for v in losses.values()])
        if not bool(torch.isfinite(stacked).all()):
            bad = [k for k, v in losses.items() if not math.isfinite(float(v))]
            last = self.run_dir / "checkpoint.pt"
            kept = (
                f"the last good checkpoint {last} ({self._checkpoint_at}) is kept"
                if last.exists() and self._checkpoint_at is not None
                else "no checkpoint was written yet"
            )
            raise NonFiniteLossError(
                f"non-finite loss ({', '.join(bad)}) at {where}; {kept}. "
                "Fix: lower train.lr, use train.precision=fp32, or check the input data."
            )

    def apply_schedule(self, steps_per_epoch: int) -> None:
        """Set every optimizer's learning rate for ``self.global_step`` (see :mod:`localssl.schedule`)."""
        t = self.cfg.train
        if t.schedule == "constant":
            return
        lr = learning_rate(
            t.schedule,
            t.lr,
            self.global_step,
            t.epochs * steps_per_epoch,
            round(t.warmup_epochs * steps_per_epoch),
            t.min_lr,
        )
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def online_probe_step(self, idx: torch.Tensor) -> torch.Tensor | None:
        """One step of the online read-outs on the first ``train.online_probe_batch`` labelled, not held-out
        images of the batch (no-op without an online probe)."""
        if self.online_probe is None:
            return None
        keep = idx[self.probe_trainable[idx]][: self.cfg.train.online_probe_batch]
        if len(keep) == 0:
            return None
        imgs = self.images[keep].to(self.device, non_blocking=True)
        return self.online_probe.train_step(imgs, self.labels[keep].to(self.device))

    def online_probe_accuracy(self) -> dict[str, float]:
        """Held-out accuracy (%) of every online read-out (empty without an online probe)."""
        if self.online_probe is None:
            return {}
        held = self.probe_holdout
        return self.online_probe.accuracy(self.images[held].to(self.device), self.labels[held].to(self.device))

    def train_epoch(self) -> dict[str, float]:
        cfg = self.cfg
        seed = epoch_seed(cfg.train.seed, self.epoch)
        torch.manual_seed(distributed.rank_seed(seed, self.world.rank))
        n_steps = self.steps_per_epoch()
        perm = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed))
        perm = perm.to(self.images.device)
        self.comp.encoder.train()
        sums, window = DeviceSums(), DeviceSums()
        start, seconds_before = self.restore_position(n_steps, sums, window)
        bs = cfg.train.batch_size
        postfix: dict[str, str] = {}
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
            probe_loss = self.online_probe_step(idx)
            if probe_loss is not None:
                metrics = {**metrics, "probe_loss": probe_loss}
            window.add(metrics)  # on the device, no host sync: the values are read once per logged row
            if (step + 1) % cfg.train.log_every == 0 or step + 1 == n_steps:
                k_steps = (step % cfg.train.log_every) + 1
                sums.add(window.as_dict())
                window = distributed.mean_over_ranks(window.as_dict())
                self.check_finite(window, f"epoch {self.epoch + 1}, step {step + 1}")
                row = {"epoch": self.epoch + 1, "step": self.global_step + 1}
                row.update({k: round(v / k_steps, 6) for k, v in zip(window, DeviceSums.read(window))})
                if self.online_probe is not None:  # every row has the columns (csv header); scored every N steps
                    every = cfg.train.online_probe_every
                    done = self.global_step + 1  # steps trained so far; score at the first row past each multiple
                    scored = bool(every) and done // every > (done - k_steps) // every
                    acc = self.online_probe_accuracy() if scored else {}
                    row.update({f"probe_acc_{n}": acc.get(f"probe_acc_{n}", "") for n in self.online_probe.names})
                    if scored:
                        postfix["probe"] = f"{acc['probe_acc_all']:.1f}%"
                self.check_divergence(row)
                if self.world.is_main:
                    append_csv(self.run_dir / "steps.csv", row)
                    if self.tensorboard is not None:
                        lr = next(iter(self.optimizers.values())).param_groups[0]["lr"]
                        self.tensorboard.scalars("step", {**row, "lr": lr}, self.global_step + 1)
                losses = [v for k, v in row.items() if k.startswith("loss")]
                if losses:
                    postfix["loss"] = f"{sum(losses):.4f}"
                if postfix:
                    bar.set_postfix(postfix)
                window = DeviceSums()
            self.global_step += 1
            if self.mid_epoch_checkpoint_due(step + 1, n_steps):
                # the steps since the last logged row must be finite too: a checkpoint is always a good one
                self.check_finite(window.as_dict(), f"epoch {self.epoch + 1}, step {step + 1}")
                seconds = time.perf_counter() - t0 + seconds_before
                self.save_checkpoint(self.epoch_position(step + 1, sums, window, seconds))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0 + seconds_before
        epoch_means = distributed.mean_over_ranks(sums.as_dict())
        out = {k: v / n_steps for k, v in zip(epoch_means, DeviceSums.read(epoch_means))}
        out.update(seconds=seconds, images_per_s=n_steps * bs * self.world.size / seconds)
        out.update(self.online_probe_accuracy())  # held-out accuracy at the epoch's end (timed apart)
        return out

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        history = []
        if not self.comp.rule.trains_encoder and self.online_probe is None:
            self.epoch = cfg.train.epochs  # random init: nothing to train (with an online probe: train only it)
        while self.epoch < cfg.train.epochs:
            row = self.train_epoch()
            self.epoch += 1
            history.append(row)
            if self.world.is_main:  # the row before the checkpoint: a crash between them only repeats it, and
                # resume trims rows past the checkpoint's step, so the CSVs never miss or duplicate a row
                append_csv(self.run_dir / "metrics.csv", {"epoch": self.epoch, "step": self.global_step, **row})
            self.save_checkpoint()
            if not self.world.is_main:
                continue
            if self.tensorboard is not None:
                self.tensorboard.scalars("epoch", row, self.global_step)
            print(
                f"epoch {self.epoch}/{cfg.train.epochs}: "
                + " ".join(
                    f"{k}={v:.4g}"
                    for k, v in row.items()
                    if k.startswith("loss") or k in ("images_per_s", "probe_acc_all")
                ),
                file=sys.stderr,
            )
        if not (self.run_dir / "checkpoint.pt").exists() or not history:
            self.save_checkpoint()
        summary = {
            "name": cfg.name,
            "epochs": self.epoch,
            "global_step": self.global_step,
            "device": str(self.device),
            "train_images": len(self.images),
            "world_size": self.world.size,
            "images_per_s": (sum(r["images_per_s"] for r in history) / len(history)) if history else None,
            "final": history[-1] if history else {},
        }
        if self.world.is_main:
            atomic_write_json(summary, self.run_dir / "summary.json")
        if self.tensorboard is not None:
            self.tensorboard.close()
        return summary


def _join_world(cfg: RunConfig) -> tuple[World, bool]:
    """This process's rank (from ``torchrun``'s environment) and whether we started the process group."""
    world = distributed.world_from_env()
    started = world.distributed and not torch.distributed.is_initialized()
    distributed.init(world, distributed.rank_device(resolve_device(cfg.train.device), world))
    return world, started


def _on_main_then_share(world: World, fn):
    """Run ``fn`` on rank 0 and hand its result (or its error) to every rank."""
    result, error = None, None
    if world.is_main:
        try:
            result = fn()
        except (FileExistsError, FileNotFoundError, ValueError) as err:
            error = err
    result, error = distributed.broadcast_object((result, error))
    if error is not None:
        raise error
    return result


def pretrain(cfg: RunConfig, run_dir: Path | None = None) -> Path:
    """Train a fresh run of ``cfg``; returns the run directory (under ``torchrun``: on every rank)."""
    cfg = resolve_config(cfg)
    world, started = _join_world(cfg)
    try:
        check_world(cfg, world)  # before the run directory exists
        data = load_pretrain_data(cfg)  # missing or unreadable data fails here, before a run directory exists
        check_online_probe(cfg, data, world)

        def prepare() -> str:
            path = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
            path.mkdir(parents=True, exist_ok=True)
            if (path / "checkpoint.pt").exists():
                raise FileExistsError(f"{path} already holds a run; use `localssl pretrain --resume {path}`")
            save_config(cfg, path / "config.yaml")
            return str(path)

        path = Path(_on_main_then_share(world, prepare))
        Trainer(cfg, path, data=data, world=world).fit()
    finally:
        if started:
            distributed.shutdown()
    return path


def resume(run_dir: Path, overrides: list[str] | None = None) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint (``train.epochs=N`` extends it).

    A run killed before its first checkpoint (it has a ``config.yaml`` but no checkpoint) is trained
    again from step 0, which gives the same run: the initialisation is seeded by ``train.seed``."""
    run_dir = Path(run_dir)
    has_checkpoint = (run_dir / "checkpoint.pt").exists() or (run_dir / "checkpoint.prev.pt").exists()
    if not has_checkpoint and not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(
            f"{run_dir / 'checkpoint.pt'} does not exist: nothing to resume (start with `localssl pretrain`)"
        )
    for item in overrides or []:
        key = item.split("=", 1)[0]
        if key not in RESUME_OVERRIDABLE:
            raise ValueError(
                f"'{key}' cannot change on resume (the run must continue exactly); "
                f"allowed: {', '.join(sorted(RESUME_OVERRIDABLE))}"
            )
    cfg = read_run_config(run_dir, overrides)
    world, started = _join_world(cfg)
    try:
        trainer = Trainer(cfg, run_dir, world=world)
        if has_checkpoint:
            ckpt, _ = load_latest(run_dir, map_location=trainer.device)
            check_config_unchanged(ckpt, trainer.cfg, run_dir)
            trainer.load_state(ckpt)
        elif world.is_main:
            print(
                f"{run_dir}: no checkpoint was written before the run stopped; training it from step 0", file=sys.stderr
            )
        trains = trainer.comp.rule.trains_encoder or trainer.online_probe is not None
        if trainer.epoch >= cfg.train.epochs and trains:
            if world.is_main:  # nothing to train: leave every file of the run as it is
                print(
                    f"{run_dir}: already trained for {trainer.epoch} epochs (train.epochs={cfg.train.epochs}); "
                    f"nothing to do, nothing changed. To continue: --resume {run_dir} train.epochs={trainer.epoch + 1}",
                    file=sys.stderr,
                )
            return run_dir
        if world.is_main:
            remove_partial_writes(run_dir)  # temporary files of writes cut short by the crash
            for log in ("steps.csv", "metrics.csv"):  # rows logged after the checkpoint are trained again
                trim_csv(run_dir / log, trainer.global_step)
            save_config(cfg, run_dir / "config.yaml")
        trainer.fit()
    finally:
        if started:
            distributed.shutdown()
    return run_dir
