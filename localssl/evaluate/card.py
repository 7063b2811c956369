"""What a model card says about a run (:mod:`localssl.evaluate.export` writes the card): the probe's accuracy and
protocol from ``probe.json`` (read whichever way it stores accuracies), the training time, the command that
reproduces the run, and the card for people (Markdown)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import yaml

from localssl.config import RunConfig, load_config
from localssl.safe_files import read_text
from localssl.utils import CSV_LIMIT

# settings that change nothing a run learns, or that the machine resolves: left out of the reproducing command
_NOT_IN_COMMAND = ("out_dir", "data.root", "train.progress", "train.device", "train.log_every")


def probe_accuracy(result: dict[str, Any], kind: str) -> float | None:
    """``kind`` (``'test'`` or ``'val'``) accuracy in percent from a probe result, whichever way it is stored:
    a key named in percent (``test_acc_pct``, ``test_acc_percent``, ...) as it is, ``test_acc`` (a fraction,
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
        raw = json.loads(read_text(path))  # a regular file only, read to a bound (safe_files)
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
            "test_acc_pct": round(probe_accuracy(result, "test"), 4),
            "val_acc_pct": _round(probe_accuracy(result, "val")),
            "settings": settings,
            "readout_precision": result.get("readout_precision"),  # what the features were read out in
            "n_train": result.get("n_train"),
            "n_val": result.get("n_val"),
            "n_test": result.get("n_test"),
        }
    return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def training_time(run_dir: Path) -> dict[str, Any]:
    """Wall and CPU seconds the run trained: ``timing.json`` (the speedrun's record of every call that trained
    it, written when a call ends), else ``harness.json``'s CPU seconds (``localssl reproduce``) with the epochs'
    seconds of ``metrics.csv`` as wall, else those seconds alone. ``source`` says which. A call that never ended
    (killed) is missing from ``timing.json`` while its checkpointed epochs are in ``metrics.csv``: when those
    epochs' seconds exceed ``timing.json``'s wall, the wall is theirs and the CPU is unknown (``cpu_s`` None,
    ``cpu_s_recorded``: the CPU of the calls that ended)."""
    run_dir = Path(run_dir)
    timing = read_json(run_dir / "timing.json")
    wall = None
    try:
        rows = csv.DictReader(io.StringIO(read_text(run_dir / "metrics.csv", CSV_LIMIT), newline=""))
        wall = round(sum(float(row["seconds"]) for row in rows if row.get("seconds")), 1)
    except (OSError, ValueError, KeyError):
        pass
    if timing and "train_wall_s" in timing:
        recorded = {
            "wall_s": round(float(timing["train_wall_s"]), 1),
            "cpu_s": round(float(timing.get("train_cpu_s", 0.0)), 1),
        }
        if wall is not None and wall > 1.01 * recorded["wall_s"]:
            return {
                "wall_s": wall,
                "cpu_s": None,
                "cpu_s_recorded": recorded["cpu_s"],
                "source": "metrics.csv's epochs: a call that trained the run did not end, so timing.json misses it "
                f"(its calls that ended: {recorded['wall_s']:.0f} s wall, {recorded['cpu_s']:.0f} s CPU)",
            }
        return {**recorded, "source": "timing.json (every call that trained the run, summed)"}
    harness = read_json(run_dir / "harness.json")
    if harness and "pretrain_cpu_s" in harness:
        return {"wall_s": wall, "cpu_s": float(harness["pretrain_cpu_s"]), "source": "metrics.csv + harness.json"}
    return {"wall_s": wall, "cpu_s": None, "source": "metrics.csv (the epochs' training seconds; CPU not recorded)"}


def read_json(path: Path) -> dict[str, Any] | None:
    """A run's JSON record as a dict, or ``None`` when it is missing, unreadable or not an object."""
    try:
        value = json.loads(read_text(path))
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
        ("probe test accuracy", f"{_pct(probe['test_acc_pct'])} ({probe['description']})" if probe else "–"),
        ("random init, same network", f"{_pct(rnd['test_acc_pct'])} (run {rnd['run']})" if rnd else "not given"),
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
