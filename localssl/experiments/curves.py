"""Learning curves of several runs on one figure (``localssl plot RUN_DIR ...``).

Each run is drawn from its ``steps.csv`` (one row every ``train.log_every`` steps; ``metrics.csv``,
one row per epoch, when there is no steps file) against the global step: one panel per column that
starts with ``loss`` (the per-layer local losses ``loss_lN``) or ``probe`` (online-probe accuracies),
in the order they first appear. A run is labelled by its preset (``name`` in ``config.yaml``) and the
settings in which its ``config.yaml`` differs from that preset (its overrides).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import yaml

from localssl.config import ConfigError, load_config
from localssl.safe_files import UnsafeFileError, read_text
from localssl.train import resolve_config
from localssl.utils import CSV_LIMIT

# settings that only say where or how visibly a run ran, not what it learned
_UNINFORMATIVE = {"out_dir", "data.root", "train.progress", "train.device"}
_PANEL_PREFIXES = ("loss", "probe")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def run_label(run_dir: Path) -> str:
    """``preset key=value ...``: the run's preset and the settings that differ from it."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no config.yaml; pass run directories made by `localssl pretrain`")
    try:
        saved = yaml.safe_load(read_text(path)) or {}  # a regular file only, read to a bound (safe_files)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path} is not valid YAML ({str(exc).splitlines()[0]}); restore the file the run wrote"
        ) from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} does not hold a run's settings (a YAML mapping); restore the file the run wrote")
    preset = str(saved.get("name", "run"))
    try:
        reference = _flatten(resolve_config(load_config(preset)).to_dict())
    except ConfigError:  # a preset from a YAML file that is no longer here: the name alone
        return preset
    diffs = [
        f"{key}={value}"
        for key, value in _flatten(saved).items()
        if key not in _UNINFORMATIVE and reference.get(key, object()) != value
    ]
    return " ".join([preset, *diffs])


def read_curves(run_dir: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Column -> (global steps, values) for every ``loss*``/``probe*`` column of the run."""
    run_dir = Path(run_dir)
    path = run_dir / "steps.csv"
    if not path.exists():
        path = run_dir / "metrics.csv"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has neither steps.csv nor metrics.csv; has it trained a step?")
    curves: dict[str, tuple[list[float], list[float]]] = {}
    try:
        for row in csv.DictReader(io.StringIO(read_text(path, CSV_LIMIT), newline="")):
            step = float(row["step"])
            for key, text in row.items():
                if key and key.startswith(_PANEL_PREFIXES) and text not in (None, ""):
                    xs, ys = curves.setdefault(key, ([], []))
                    xs.append(step)
                    ys.append(float(text))
    except (csv.Error, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, UnsafeFileError):
            raise
        raise ValueError(
            f"{path} is not a CSV log localssl wrote (no step column, or a value that is not a number: {exc}); "
            "restore the file the run wrote, or leave this run out of the plot"
        ) from None
    return curves


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    """One figure, one panel per curve column, one line per run; returns the written path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise ValueError("give at least one run directory")
    runs = [(run_label(d), read_curves(d)) for d in run_dirs]
    columns: list[str] = []
    for _, curves in runs:
        columns += [c for c in curves if c not in columns]
    if not columns:
        raise ValueError("none of the runs logged a loss or probe column")
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows + 0.4 * len(runs)), squeeze=False)
    for ax, column in zip(axes.flat, columns):
        for i, (label, curves) in enumerate(runs):
            if column in curves:
                ax.plot(*curves[column], color=f"C{i}", label=label, lw=1.2)
        ax.set_title(column, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=1, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * len(runs) / (nrows + 0.5), 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
