"""The settings a checkpoint was trained under, and the check that a resume keeps them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from localssl.config import RunConfig

RESUME_OVERRIDABLE = {
    "train.epochs",
    "train.device",
    "train.progress",
    "train.log_every",
    "train.max_steps_per_epoch",
    "train.checkpoint_every",
    "train.checkpoint_every_minutes",
    "train.parallel",  # how the processes share the work; layers gives the one-process weights
    "train.stage_bounds",
    "train.stage_timeout",
    "train.stage_queue",
    "data.root",
    # the fast path: another precision or memory format continues the run, but not bit-exactly (another
    # rounding); a resume keeps the recorded values unless told, even where `auto` would now choose otherwise
    "train.precision",
    "train.precision_requested",
    "train.channels_last",
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


NETWORK_SECTIONS = ("name", "model.", "views.", "objective.", "rule.", "data.name")  # what the weights are


def check_config_unchanged(
    ckpt: dict[str, Any], cfg: RunConfig, run_dir: Path, only: tuple[str, ...] | None = None, path: Path | None = None
) -> None:
    """Refuse a checkpoint whose settings differ from the run's ``config.yaml``: on resume every setting
    but :data:`RESUME_OVERRIDABLE` (the optimizer state would silently keep the old settings while the
    config says otherwise); for readers (probe, align, plot) ``only`` the keys that define the network
    (:data:`NETWORK_SECTIONS`), so a checkpoint copied from another run is not read as this one's."""
    if "config" not in ckpt:  # checkpoints written before the config was stored in them
        return
    then, now = json.loads(ckpt["config"]), json.loads(config_fingerprint(cfg))
    changed = sorted(
        k
        for k in then.keys() | now.keys()
        if k not in RESUME_OVERRIDABLE  # checkpoints written before a key became overridable still hold it
        and then.get(k) != now.get(k)
        and not (k not in then and now[k] == _default_setting(cfg, k))
        and (only is None or k.startswith(only))
    )
    if changed:
        diffs = "; ".join(f"{k}: checkpoint {then.get(k)!r}, config.yaml {now.get(k)!r}" for k in changed)
        name = path.name if path is not None else "its checkpoint"
        fix = (
            "Restore those values to resume exactly, or start a new run with `localssl pretrain`."
            if only is None
            else f"It belongs to another run: put back this run's own {name}, or probe the run it came from."
        )
        raise ValueError(f"{run_dir / 'config.yaml'} differs from the config {name} was trained with ({diffs}). {fix}")


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
