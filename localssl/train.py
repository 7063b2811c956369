"""One trainer for every recipe: it asks the rule for the gradients and steps one optimizer.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.csv`` (one row per epoch),
``steps.csv`` (one row every ``train.log_every`` steps), ``checkpoint.pt`` (written atomically at
the end of every epoch) and ``summary.json``. Every epoch's shuffling and augmentation are seeded by
``(seed, epoch)``, so ``--resume`` continues bit-identically on the same machine.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from localssl.build import Components, build, resolve_device
from localssl.config import RunConfig, read_run_config, save_config
from localssl.data import ImageData, dataset_info, load_split
from localssl.utils import append_csv, atomic_torch_save, atomic_write_json, epoch_seed, make_optimizer


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept untouched."""


RESUME_OVERRIDABLE = {
    "train.epochs",
    "train.device",
    "train.progress",
    "train.log_every",
    "train.max_steps_per_epoch",
    "data.root",
}


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Fill dataset-dependent ``auto`` values that the trainer itself uses."""
    info = dataset_info(cfg.data.name)
    train = cfg.train
    if train.weight_decay == "auto":
        train = dataclasses.replace(train, weight_decay=info.weight_decay)
    return dataclasses.replace(cfg, train=train)


def load_pretrain_data(cfg: RunConfig) -> ImageData:
    info = dataset_info(cfg.data.name)
    split = info.pretrain_split if cfg.data.pretrain_split == "auto" else cfg.data.pretrain_split
    data = load_split(cfg.data.name, split, cfg.data.root)
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


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, data: ImageData | None = None) -> None:
        cfg = resolve_config(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.train.device)
        self.comp: Components = build(cfg, self.device)
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
        if cfg.train.compile:
            for layer in self.comp.encoder.layers:
                layer.compile()
        params = list(self.comp.rule.parameters_to_train(self.comp.encoder))
        self.optimizer = make_optimizer(
            cfg.train.optimizer, params, cfg.train.lr, float(cfg.train.weight_decay), cfg.train.momentum
        )
        self.comp.rule.attach_optimizer(self.optimizer)
        self.epoch = 0
        self.global_step = 0

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "encoder": self.comp.encoder.state_dict(),
            "rule": self.comp.rule.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "torch_version": torch.__version__,
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self.comp.encoder.load_state_dict(ckpt["encoder"])
        self.comp.rule.load_state_dict(ckpt["rule"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])

    def save_checkpoint(self) -> None:
        atomic_torch_save(self.state(), self.run_dir / "checkpoint.pt")

    # ------------------------------------------------------------------ training
    def steps_per_epoch(self) -> int:
        n = len(self.images) // self.cfg.train.batch_size
        if n == 0:
            raise ValueError(
                f"{len(self.images)} training images are fewer than one batch of {self.cfg.train.batch_size}; "
                "lower train.batch_size or raise data.train_subset"
            )
        cap = self.cfg.train.max_steps_per_epoch
        return min(n, cap) if cap else n

    def check_finite(self, metrics: dict[str, torch.Tensor], where: str) -> None:
        losses = {k: v for k, v in metrics.items() if k.startswith("loss")}
        if not losses:
            return
        stacked = torch.stack([v.float() for v in losses.values()])
        if not bool(torch.isfinite(stacked).all()):
            bad = [k for k, v in losses.items() if not math.isfinite(float(v))]
            last = self.run_dir / "checkpoint.pt"
            kept = (
                f"the last good checkpoint {last} (epoch {self.epoch}) is kept"
                if last.exists()
                else "no checkpoint was written yet"
            )
            raise NonFiniteLossError(
                f"non-finite loss ({', '.join(bad)}) at {where}; {kept}. "
                "Fix: lower train.lr, use train.precision=fp32, or check the input data."
            )

    def train_epoch(self) -> dict[str, float]:
        cfg = self.cfg
        torch.manual_seed(epoch_seed(cfg.train.seed, self.epoch))
        n_steps = self.steps_per_epoch()
        perm = torch.randperm(
            len(self.images), generator=torch.Generator().manual_seed(epoch_seed(cfg.train.seed, self.epoch))
        )
        perm = perm.to(self.images.device)
        encoder, rule, views = self.comp.encoder, self.comp.rule, self.comp.views
        encoder.train()
        sums: dict[str, torch.Tensor] = {}
        window: dict[str, torch.Tensor] = {}
        bs = cfg.train.batch_size
        t0 = time.perf_counter()
        bar = tqdm(
            range(n_steps),
            desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}",
            leave=False,
            disable=not cfg.train.progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        for step in bar:
            idx = perm[step * bs : (step + 1) * bs]
            imgs = self.images[idx].to(self.device, non_blocking=True)
            vb = views(imgs, self.labels[idx].to(self.device))
            if vb.x.dim() == 4:  # channels_last is a 4-D layout (audio windows are 3-D)
                vb.x = vb.x.contiguous(memory_format=self.memory_format)
            self.optimizer.zero_grad(set_to_none=True)
            metrics = rule.step(encoder, vb)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0) + v.float()
                window[k] = window.get(k, 0) + v.float()
            if (step + 1) % cfg.train.log_every == 0 or step + 1 == n_steps:
                k_steps = (step % cfg.train.log_every) + 1
                self.check_finite(window, f"epoch {self.epoch + 1}, step {step + 1}")
                row = {"epoch": self.epoch + 1, "step": self.global_step + 1}
                row.update({k: round(float(v) / k_steps, 6) for k, v in window.items()})
                append_csv(self.run_dir / "steps.csv", row)
                losses = [float(v) / k_steps for k, v in window.items() if k.startswith("loss")]
                if losses:
                    bar.set_postfix(loss=f"{sum(losses):.4f}")
                window = {}
            self.optimizer.step()
            self.global_step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        out = {k: float(v) / n_steps for k, v in sums.items()}
        out.update(seconds=seconds, images_per_s=n_steps * bs / seconds)
        return out

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        history = []
        if not self.comp.rule.trains_encoder:
            self.epoch = cfg.train.epochs  # random init: nothing to train
        while self.epoch < cfg.train.epochs:
            row = self.train_epoch()
            self.epoch += 1
            self.save_checkpoint()
            append_csv(self.run_dir / "metrics.csv", {"epoch": self.epoch, "step": self.global_step, **row})
            history.append(row)
            print(
                f"epoch {self.epoch}/{cfg.train.epochs}: "
                + " ".join(f"{k}={v:.4g}" for k, v in row.items() if k.startswith("loss") or k == "images_per_s"),
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
            "images_per_s": (sum(r["images_per_s"] for r in history) / len(history)) if history else None,
            "final": history[-1] if history else {},
        }
        atomic_write_json(summary, self.run_dir / "summary.json")
        return summary


def pretrain(cfg: RunConfig, run_dir: Path | None = None) -> Path:
    """Train a fresh run of ``cfg``; returns the run directory."""
    cfg = resolve_config(cfg)
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "checkpoint.pt").exists():
        raise FileExistsError(f"{run_dir} already holds a run; use `localssl pretrain --resume {run_dir}`")
    save_config(cfg, run_dir / "config.yaml")
    Trainer(cfg, run_dir).fit()
    return run_dir


def resume(run_dir: Path, overrides: list[str] | None = None) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint (``train.epochs=N`` extends it)."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{ckpt_path} does not exist: nothing to resume (start with `localssl pretrain`)")
    for item in overrides or []:
        key = item.split("=", 1)[0]
        if key not in RESUME_OVERRIDABLE:
            raise ValueError(
                f"'{key}' cannot change on resume (the run must continue exactly); "
                f"allowed: {', '.join(sorted(RESUME_OVERRIDABLE))}"
            )
    cfg = read_run_config(run_dir, overrides)
    trainer = Trainer(cfg, run_dir)
    trainer.load_state(torch.load(ckpt_path, map_location=trainer.device, weights_only=False))
    save_config(cfg, run_dir / "config.yaml")
    trainer.fit()
    return run_dir
