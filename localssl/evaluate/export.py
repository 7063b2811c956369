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

import csv
import dataclasses
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from localssl.build import input_shape
from localssl.checkpoint import checkpoint_position, read_run_checkpoint
from localssl.config import RunConfig, load_config, read_run_config
from localssl.data import data_info
from localssl.data.run_data import DATASET_FILE
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
# settings that change nothing a run learns, or that the machine resolves: left out of the reproducing command
_NOT_IN_COMMAND = ("out_dir", "data.root", "train.progress", "train.device", "train.log_every")


@dataclasses.dataclass
class ExportResult:
    path: Path
    card: Path
    markdown: Path
    sha256: str
    bytes: int
    seconds: float
    replaced: list[Path]


# ------------------------------------------------------------------------------------------- reading a run
def probe_accuracy(result: dict[str, Any], kind: str) -> float | None:
    """``kind`` (``'test'`` or ``'val'``) accuracy in percent from a probe result, whichever way it is stored:
    a key named in percent (``test_acc_percent``, ``test_acc_pct``, ...) as it is, ``test_acc`` (a fraction,
    as probe.json has written it) times 100."""
    for key, value in result.items():
        if key.startswith(f"{kind}_acc") and ("percent" in key or "pct" in key) and _number(value):
            return float(value)
    for key in (f"{kind}_acc", f"{kind}_accuracy"):
        if _number(result.get(key)):
            return 100.0 * float(result[key])
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def describe_protocol(protocol: str, settings: dict[str, Any], n_val: int | None = None) -> str:
    """One sentence for the probe protocol a result was measured with (``n_val``: the held-out images it used)."""
    s = settings
    if protocol == "paper":
        return (
            f"the CLAPP++ authors' probe (probe.protocol=paper): {s.get('epochs')} epochs of Adam {s.get('lr')} at "
            f"batch 32 on all labelled train images with fresh crops and flips every epoch, no z-scoring; the last "
            "epoch's test accuracy"
        )
    return (
        f"honest linear probe (`localssl probe`): {s.get('epochs')} epochs of Adam {s.get('lr')} at batch "
        f"{s.get('batch_size')} on the {'z-scored ' if s.get('standardize', True) else ''}pooled features of layers "
        f"{s.get('layers')}, the epoch chosen on {n_val if n_val is not None else s.get('val_size')} held-out train "
        "images, the test split scored once"
    )


def probe_summary(run_dir: Path, position: dict[str, Any]) -> dict[str, Any] | None:
    """The run's probe result at the checkpoint ``position``, from ``probe.json`` (its honest section, else the
    top level; else its paper section): accuracies in percent, protocol and settings. ``None`` when the run was
    not probed, or probed at another checkpoint (then the result is not this encoder's)."""
    path = Path(run_dir) / "probe.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    for result in (raw.get("honest"), raw, raw.get("paper")):
        if not isinstance(result, dict) or probe_accuracy(result, "test") is None:
            continue
        if result.get("checkpoint_step", position["global_step"]) != position["global_step"]:
            continue
        protocol = str(result.get("protocol", "honest"))
        settings = result.get("probe") if isinstance(result.get("probe"), dict) else {}
        return {
            "protocol": protocol,
            "description": describe_protocol(protocol, settings, result.get("n_val")),
            "test_acc_percent": round(probe_accuracy(result, "test"), 4),
            "val_acc_percent": _round(probe_accuracy(result, "val")),
            "settings": settings,
            "n_train": result.get("n_train"),
            "n_val": result.get("n_val"),
            "n_test": result.get("n_test"),
        }
    return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def training_time(run_dir: Path) -> dict[str, Any]:
    """Wall and CPU seconds the run trained: ``timing.json`` (the speedrun's record of every call that trained
    it), else ``harness.json``'s CPU seconds (``localssl reproduce``) with the epochs' seconds of
    ``metrics.csv`` as wall, else those seconds alone. ``source`` says which."""
    run_dir = Path(run_dir)
    timing = _json(run_dir / "timing.json")
    if timing and "train_wall_s" in timing:
        return {
            "wall_s": round(float(timing["train_wall_s"]), 1),
            "cpu_s": round(float(timing.get("train_cpu_s", 0.0)), 1),
            "source": "timing.json (every call that trained the run, summed)",
        }
    wall = None
    try:
        with open(run_dir / "metrics.csv") as fh:
            wall = round(sum(float(row["seconds"]) for row in csv.DictReader(fh) if row.get("seconds")), 1)
    except (OSError, ValueError, KeyError):
        pass
    harness = _json(run_dir / "harness.json")
    if harness and "pretrain_cpu_s" in harness:
        return {"wall_s": wall, "cpu_s": float(harness["pretrain_cpu_s"]), "source": "metrics.csv + harness.json"}
    return {"wall_s": wall, "cpu_s": None, "source": "metrics.csv (the epochs' training seconds; CPU not recorded)"}


def _json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _flat(cfg: RunConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, value in cfg.to_dict().items():
        if isinstance(value, dict):
            out.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            out[section] = value
    return out


def _value(v: Any) -> str:
    if isinstance(v, str) and yaml.safe_load(v) == v and re.fullmatch(r"[A-Za-z0-9_.+/-]+", v):
        return v
    return json.dumps(v)


def pretrain_command(cfg: RunConfig) -> str:
    """``localssl pretrain PRESET key=value ...``: the run's settings where they differ from its preset's (without
    the data folder, device and progress; the precision as the run requested it, which each machine resolves)."""
    flat = _flat(cfg)
    if flat.get("train.precision_requested") is not None:
        flat["train.precision"] = flat["train.precision_requested"]
    try:
        base = _flat(load_config(cfg.name))
    except (ValueError, OSError):
        base = {}
    skip = {*_NOT_IN_COMMAND, "train.precision_requested", "train.channels_last"}
    if base.get("train.channels_last") != "auto":
        skip.discard("train.channels_last")
    items = [
        f"{k}={_value(v)}"
        for k, v in flat.items()
        if k not in skip and not k.startswith("probe.") and k != "name" and (k not in base or base[k] != v)
    ]
    preset = cfg.name if base else "CONFIG.yaml"
    return " ".join(["localssl pretrain", preset, *items])


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
    manifest = _json(run_dir / DATASET_FILE)
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
    from localssl import __version__

    summary = _json(run_dir / "summary.json") or {}
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
            "by": code or f"localssl {__version__}",
            "machine": machine_name(),
            "run": run_dir.name,
        },
        "licence": LICENCE,
        "url": None,
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} %"


def card_markdown(card: dict[str, Any]) -> str:
    """The model card for people (the JSON card's fields)."""
    t, probe, rnd = card["training"], card["probe"], card["random_init"]
    model = card["model"]
    wall, cpu = _duration(t.get("wall_s")), _duration(t.get("cpu_s"))
    fp = card["data"]["fingerprint"] or {}
    rows = [
        ("file", f"`{card['file']}` ({card['bytes']:,} bytes, {card['dtype']}, {card['parameters']:,} parameters)"),
        ("sha256", f"`{card['sha256']}`"),
        ("preset", f"`{card['preset']}`: {model.get('name')} at width {model.get('width')}"),
        ("data", f"{card['data']['name']}; fingerprint " + (", ".join(f"{s} `{v}`" for s, v in fp.items()) or "–")),
        ("training", f"{t['epochs']} epoch(s), {t['steps']:,} steps; wall {wall}, CPU {cpu} ({t['source']})"),
        ("machine", f"{t.get('machine') or 'not recorded by the run'} ({t.get('device')})"),
        ("probe test accuracy", f"{_pct(probe['test_acc_percent'])} ({probe['description']})" if probe else "–"),
        ("random init, same network", f"{_pct(rnd['test_acc_percent'])} (run {rnd['run']})" if rnd else "not given"),
        ("reproduce", f"`{card['made_by'] or card['command']}`"),
        ("licence", card["licence"]),
        ("exported", f"{card['exported']['date']} by {card['exported']['by']}"),
    ]
    if card["made_by"]:
        rows.insert(9, ("as one pretraining", f"`{card['command']}`"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (
        f"# {card['name']}\n\n"
        f"An encoder exported by `localssl export` ({card['format']}): the card of `{card['file']}`; every field, "
        f"and the resolved config, is in `{Path(card['file']).with_suffix('.json').name}`.\n\n"
        f"| | |\n| --- | --- |\n{table}\n\n"
        "```python\nimport localssl\n\n"
        f'encoder = localssl.load_encoder("{card["file"]}")  # the hash is checked; no pickle is read\n'
        "feats = localssl.features(encoder, images)  # uint8 (N, 3, H, W): the probe's pooled features\n```\n"
    )
