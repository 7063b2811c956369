"""``localssl export RUN``: a run's encoder as a safetensors file named by its hash, with its model card.

Writes, into ``--out`` (default ``RUN/export/``) or, with ``--ship NAME``, into the folder of shipped
encoders (:func:`~localssl.evaluate.pretrained.weights_dir`), three files of one stem:

* ``NAME-<sha256 prefix>.safetensors``: the encoder's tensors (fp32, or bf16 with ``--dtype bf16``) and, in the
  header's metadata, the resolved config, the input shape, the read-out (normalisation, pool kernels), the
  data manifest (``dataset.json``) and the checkpoint's position, so the file alone rebuilds the encoder;
* ``NAME-<prefix>.json``, the model card: preset, resolved config, data and its fingerprint, steps, wall and CPU
  time, machine, the probe's accuracy with its protocol (when the run was probed at this checkpoint), random
  init's beside it (``--baseline RUN``), the command that reproduces the run, sha256, licence;
* ``NAME-<prefix>.md``, the same card for people.

Every check (the run's config and checkpoint, the name, the dtype, the baseline) runs before anything is
written; each file is written atomically. Shipping replaces an older file of the same name and its cards (after
the new ones are in place), so a rerun of the command that made a shipped encoder replaces it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import re
import time
from pathlib import Path
from typing import Any

import torch

from localssl.build import input_shape
from localssl.checkpoint import checkpoint_position, read_run_checkpoint
from localssl.config import RunConfig, read_run_config
from localssl.data import data_info
from localssl.data.run_data import DATASET_FILE
from localssl.evaluate.card import card_markdown, pretrain_command, probe_summary, read_json, training_time
from localssl.evaluate.features import OwnProbeFeatures
from localssl.evaluate.pretrained import (
    DTYPES,
    FORMAT,
    METADATA_KEY,
    NAME,
    SHIPPED_NAME,
    WeightsError,
    card_paths,
    file_name,
    weights_dir,
)
from localssl.registry import MODELS, VIEWS
from localssl.utils import atomic_write_bytes, machine_name

LICENCE = (
    "MIT, as localssl (the weights and this card); the images the encoder was trained on keep their own terms of use"
)


@dataclasses.dataclass
class ExportResult:
    path: Path
    card: Path
    markdown: Path
    sha256: str
    bytes: int
    seconds: float
    replaced: list[Path]

    def describe(self) -> str:
        """What was written (and replaced), for the command's stderr."""
        lines = [f"replaced {old}" for old in self.replaced]
        lines.append(f"{self.bytes:,} bytes, sha256 {self.sha256}; card {self.card} and {self.markdown.name}")
        return "\n".join(lines)


def readout_info(cfg: RunConfig) -> dict[str, Any]:
    """How the probe reads the encoder out: ``pooled`` (each layer pooled with the dataset's kernels, the
    dataset's normalisation), the views' own read-out (their name), or ``frames`` (audio)."""
    info = data_info(cfg.data)
    if info.kind == "sequence":
        return {"kind": "frames"}
    views = VIEWS.get(cfg.views.name).builder(cfg.views, info)
    if isinstance(views, OwnProbeFeatures):
        return {"kind": cfg.views.name}
    return {
        "kind": "pooled",
        "mean": list(info.mean),
        "std": list(info.std),
        "pool_kernels": list(info.pool_kernels) or None,
        "image_size": info.image_size,
    }


# ------------------------------------------------------------------------------------------- the export
def export_run(
    run_dir: str | Path,
    name: str | None = None,
    dtype: str = "fp32",
    out_dir: str | Path | None = None,
    ship: str | None = None,
    baseline: str | Path | None = None,
    made_by: str | None = None,
    code: str | None = None,
) -> ExportResult:
    """Export ``run_dir``'s encoder (its newest verified checkpoint) and its model card; see the module's
    docstring. ``ship``: the name to ship it under (replacing that name's older file in the shipped folder);
    ``baseline``: a run of the ``random`` preset of the same network, whose probe is the card's random init;
    ``made_by``: the command that made the run when it is not a plain ``localssl pretrain`` (e.g. the
    speedrun's); ``code``: the code version, for the card."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    if dtype not in DTYPES:
        raise WeightsError(f"--dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    if ship is not None:
        if not SHIPPED_NAME.match(ship):
            raise WeightsError(
                f"--ship {ship}: a shipped encoder's name is its torch.hub entry, so it must be a Python name "
                "(letters, digits, underscores; e.g. clapp_pp_cifar10)"
            )
        if out_dir is not None or (name is not None and name != ship):
            raise WeightsError(
                "--ship NAME writes NAME into the shipped weights folder; give --ship without --out, --name"
            )
        name, folder = ship, weights_dir()
    else:
        folder = Path(out_dir) if out_dir is not None else run_dir / "export"
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(
            f"{run_dir}/config.yaml does not exist: give a run directory (`localssl pretrain` prints it)"
        )
    cfg = read_run_config(run_dir)
    name = name or cfg.name
    if not NAME.match(name):
        raise WeightsError(f"--name {name}: use letters, digits, '_', '+' and '-' only (no '.', no '/')")
    ckpt, _ = read_run_checkpoint(run_dir, cfg)
    position = checkpoint_position(ckpt)
    info = data_info(cfg.data)
    shape = input_shape(cfg, info)
    target = DTYPES[dtype]
    tensors = {
        k: (v.detach().to("cpu", target) if v.is_floating_point() else v.detach().cpu()).contiguous().clone()
        for k, v in ckpt["encoder"].items()
    }
    encoder = MODELS.get(cfg.model.name).builder(cfg.model, in_channels=shape[0])
    encoder.load_state_dict(tensors, strict=True)  # the file will load back into the network its config builds
    random_init = _baseline(Path(baseline), cfg) if baseline is not None else None
    manifest = read_json(run_dir / DATASET_FILE)
    meta = {
        "format": FORMAT,
        "name": name,
        "dtype": dtype,
        "config": cfg.to_dict(),
        "input_shape": list(shape),
        "readout": readout_info(cfg),
        "data": manifest,
        "epoch": position["epoch"],
        "global_step": position["global_step"],
        "mid_epoch_step": position["mid_epoch_step"],
    }
    blob = _serialize(tensors, meta)
    sha256 = hashlib.sha256(blob).hexdigest()
    path = folder / file_name(name, sha256)
    card = _card(run_dir, cfg, meta, path, sha256, len(blob), tensors, position, random_init, made_by, code)
    card_json, card_md = card_paths(path)

    # ---- nothing was written before this line
    atomic_write_bytes(path, lambda fh: fh.write(blob))
    atomic_write_bytes(card_json, lambda fh: fh.write((json.dumps(card, indent=2) + "\n").encode()))
    atomic_write_bytes(card_md, lambda fh: fh.write(card_markdown(card).encode()))
    replaced = _remove_older(folder, name, path) if ship is not None else []
    return ExportResult(path, card_json, card_md, sha256, len(blob), time.perf_counter() - start, replaced)


def _serialize(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})


def _baseline(run: Path, cfg: RunConfig) -> dict[str, Any]:
    """Random init's probe from ``run`` (the ``random`` preset of the same network, probed)."""
    base = read_run_config(run)
    if base.to_dict()["model"] != cfg.to_dict()["model"]:
        raise WeightsError(
            f"--baseline {run} is another network (model.* differ); give random init of this run's network"
        )
    summary = probe_summary(run, {"global_step": 0})
    if summary is None:
        raise WeightsError(
            f"--baseline {run} has no probe.json of its initial weights; probe it first: localssl probe {run}"
        )
    return {"run": run.name, "preset": base.name, **summary}


def _remove_older(folder: Path, name: str, keep: Path) -> list[Path]:
    """Remove the shipped files of ``name`` other than ``keep``'s (an older export of the same name)."""
    pattern = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{8,64}}\.(safetensors|json|md)$")
    gone = []
    for p in sorted(folder.iterdir()):
        if pattern.match(p.name) and p.with_suffix("") != keep.with_suffix(""):
            p.unlink()
            gone.append(p)
    return gone


def _card(
    run_dir: Path,
    cfg: RunConfig,
    meta: dict[str, Any],
    path: Path,
    sha256: str,
    size: int,
    tensors: dict[str, torch.Tensor],
    position: dict[str, Any],
    random_init: dict[str, Any] | None,
    made_by: str | None,
    code: str | None,
) -> dict[str, Any]:
    summary = read_json(run_dir / "summary.json") or {}
    manifest = meta["data"]
    return {
        "format": FORMAT,
        "name": meta["name"],
        "file": path.name,
        "sha256": sha256,
        "bytes": size,
        "dtype": meta["dtype"],
        "parameters": int(sum(t.numel() for t in tensors.values())),
        "preset": cfg.name,
        "model": cfg.to_dict()["model"],
        "config": cfg.to_dict(),
        "data": {
            "name": cfg.data.name,
            "manifest": manifest,
            "fingerprint": {s: v.get("fingerprint") for s, v in (manifest or {}).get("splits", {}).items()} or None,
            "train_images": summary.get("train_images"),
        },
        "training": {
            "epochs": position["epoch"],
            "steps": position["global_step"],
            "mid_epoch_step": position["mid_epoch_step"],
            **training_time(run_dir),
            "device": summary.get("device"),
            "machine": summary.get("machine"),
            "world_size": summary.get("world_size"),
        },
        "probe": probe_summary(run_dir, position),
        "random_init": random_init,
        "readout": meta["readout"],
        "input_shape": meta["input_shape"],
        "command": pretrain_command(cfg),
        "made_by": made_by,
        "exported": {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "by": code or f"localssl {_version()}",
            "machine": machine_name(),
            "run": run_dir.name,
        },
        "licence": LICENCE,
        "url": None,
    }


def _version() -> str:
    try:
        return importlib.metadata.version("localssl")
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"
