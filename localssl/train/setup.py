"""Everything a run checks and resolves before its first step, done once per start.

:meth:`RunSetup.prepare` fills the dataset-dependent ``auto`` settings, refuses settings that cannot run
(a rule that cannot be split into layer-parallel stages, an online probe on unlabelled data, ...) and loads
the pretraining images, all before a run directory is written. ``pretrain``/``resume`` prepare once and
hand the result to the :class:`~localssl.train.trainer.Trainer`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from localssl import distributed
from localssl.build import check_input_fits, resolve_device
from localssl.config import RunConfig
from localssl.data import DatasetInfo, ImageData, data_info
from localssl.data.pretrain import load_pretrain_data
from localssl.distributed import SINGLE, World
from localssl.registry import RULES
from localssl.rules.base import Rule
from localssl.schedule import check_schedule
from localssl.tensorboard_log import require_tensorboard
from localssl.train.fast_path import resolve_fast_path


def resolve_config(cfg: RunConfig, info: DatasetInfo | None = None) -> RunConfig:
    """Fill dataset-dependent ``auto`` values that the trainer itself uses, and the hardware-dependent
    ``train.precision`` / ``train.channels_last`` (:func:`~localssl.train.fast_path.resolve_fast_path`);
    for ``data.name=folder`` also the normalisation computed from the images (stored in config.yaml, so the
    probe and a resume normalise as the encoder was trained, even after images are added)."""
    info = info if info is not None else data_info(cfg.data)
    train = cfg.train
    check_schedule(train.schedule, train.warmup_epochs, train.epochs)
    if train.tensorboard:
        require_tensorboard()
    if train.parallel == "layers" and not train.step_each_layer:  # a stage steps its own layers' optimizers
        train = dataclasses.replace(train, step_each_layer=True)
    if train.weight_decay == "auto":
        train = dataclasses.replace(train, weight_decay=info.weight_decay)
    train = resolve_fast_path(train, resolve_device(train.device))
    data = cfg.data
    if data.name == "folder":  # any image size can come: check the encoder takes it
        check_input_fits(cfg, info)
        root = str(Path(data.root).expanduser().resolve())  # the probe may run from another directory
        data = dataclasses.replace(data, root=root, mean=list(info.mean), std=list(info.std))
    return dataclasses.replace(cfg, train=train, data=data)


def check_world(cfg: RunConfig, world: World) -> None:
    """Refuse a ``train.parallel=layers`` run that cannot start: a rule that cannot be split into stages
    (its reason), an online probe (it reads every layer, and a stage holds only its own)."""
    t = cfg.train
    if t.parallel != "layers":
        return
    builder = RULES.get(cfg.rule.name).builder
    if not (isinstance(builder, type) and issubclass(builder, Rule)):
        refusal = "its builder is not a Rule subclass, so it cannot say how it splits into stages"
    else:
        refusal = builder.layer_parallel_refusal(cfg.rule)
    if refusal is not None:
        raise ValueError(f"train.parallel=layers cannot train rule '{cfg.rule.name}': {refusal}")
    if t.online_probe and world.distributed:
        raise ValueError(
            "train.online_probe=true is not available with train.parallel=layers: the read-outs need every "
            "layer's activity in one process, and each stage holds only its own layers; set "
            "train.online_probe=false and run `localssl probe RUN_DIR` after training"
        )


def check_online_probe(cfg: RunConfig, data: ImageData, world: World = SINGLE, info: DatasetInfo | None = None) -> None:
    """Refuse ``train.online_probe=true`` where it cannot run, before anything is written."""
    if not cfg.train.online_probe:
        return
    info = info if info is not None else data_info(cfg.data)
    why = None
    if info.kind != "image":
        why = f"{cfg.data.name} is a {info.kind} dataset (frame labels); use `localssl probe` after training"
    elif cfg.views.name == "patch_grid":
        why = "patch_grid views read out the average over image patches; use `localssl probe` after training"
    elif world.distributed and not RULES.get(cfg.rule.name).builder.trains_encoder:
        why = "under torchrun the read-outs train on rank 0 beside the encoder's training, and this rule trains nothing"
    elif not bool((data.labels >= 0).any()):
        why = f"the pretraining split of {cfg.data.name} has no labels (e.g. STL-10 unlabeled)"
    if why:
        raise ValueError(f"train.online_probe=true is not available here: {why}. Set train.online_probe=false.")


def check_batch_fits(cfg: RunConfig, n_images: int, world: World = SINGLE) -> None:
    """Refuse a batch larger than the data, before anything is written: the global batch (every data-parallel
    rank's ``train.batch_size``; layer-parallel stages share one batch) must fit the training images once."""
    ranks = world.size if world.distributed and cfg.train.parallel != "layers" else 1
    global_batch = cfg.train.batch_size * ranks
    if n_images // global_batch == 0:
        raise ValueError(
            f"{n_images} training images are fewer than one global batch of {global_batch} "
            f"({ranks} rank(s) × train.batch_size={cfg.train.batch_size}); "
            "lower train.batch_size or raise data.train_subset"
        )


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """A run's resolved config, its dataset's settings and its pretraining images, checked once. ``n_images``:
    how many images the run trains on; a layer-parallel stage other than the first holds none of them
    (``data`` is empty there: it receives the activations of the stage before it)."""

    cfg: RunConfig
    info: DatasetInfo
    data: ImageData
    world: World = SINGLE
    n_images: int = -1

    def __post_init__(self) -> None:
        if self.n_images < 0:
            object.__setattr__(self, "n_images", len(self.data.images))

    @classmethod
    def prepare(cls, cfg: RunConfig, world: World = SINGLE, data: ImageData | None = None) -> RunSetup:
        """Resolve and check ``cfg`` and load its images (unless given): every error a setting or the data
        can cause is raised here, before a run directory exists. Layer-parallel stages: only the first loads
        the images, and tells the others how many there are (or its error)."""
        info = data_info(cfg.data)
        cfg = resolve_config(cfg, info)
        check_world(cfg, world)
        if not first_stage_only(cfg, world):
            data = data if data is not None else load_pretrain_data(cfg, info)
            check_online_probe(cfg, data, world, info)
            check_batch_fits(cfg, len(data.images), world)
            return cls(cfg, info, data, world)
        n_images, error = 0, None
        if world.is_main:
            try:
                data = data if data is not None else load_pretrain_data(cfg, info)
                check_batch_fits(cfg, len(data.images), world)
                n_images = len(data.images)
            except (ValueError, RuntimeError, OSError) as err:  # every stage stops with the first stage's error
                error = err
        n_images, error = distributed.broadcast_object((n_images, error))
        if error is not None:
            raise error
        if data is None or not world.is_main:
            data = ImageData(torch.empty((0, 0, 0, 0), dtype=torch.uint8), torch.empty(0, dtype=torch.long), [])
        return cls(cfg, info, data, world, n_images)


def first_stage_only(cfg: RunConfig, world: World) -> bool:
    """Whether only rank 0 loads the images: a layer-parallel run under ``torchrun``."""
    return cfg.train.parallel == "layers" and world.distributed
