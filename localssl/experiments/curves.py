"""Learning curves of several runs on one figure (``localssl plot RUN_DIR ...``).

Each run's per-layer local losses (``loss_lN``) are drawn from its ``steps.csv`` (one row every
``train.log_every`` steps; ``metrics.csv``, one row per epoch, when there is no steps file) against the global
step, one panel per layer. A run trained with the online probe (``train.online_probe=true``) also gets its
accuracies from ``metrics.csv`` (the probe scores at epoch ends, or every ``train.online_probe_every`` steps),
drawn in one more panel: the probe on all layers together, in percent.

Every run is labelled once, in a legend below the panels, by its preset (``name`` in ``config.yaml``) and the
settings the user gave that differ among the plotted runs; settings every run shares are named once, in the
figure's title. Each run has its own colour, line style and marker, so a line drawn over another stays
visible, and a run with a single logged row is still a point.
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
from localssl.utils import CSV_LIMIT, save_figure

# settings that only say where or how visibly a run ran, not what it learned
_UNINFORMATIVE = {"out_dir", "data.root", "train.progress", "train.device"}
LOSS_PREFIX = "loss"
PROBE_PREFIXES = ("probe_acc_pct_", "probe_acc_")  # the online probe's columns (percent; the second: before the unit)
ACCURACY_PANEL = "online probe: test accuracy, all layers (%)"
_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

Curves = dict[str, tuple[list[float], list[float]]]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def user_settings(run_dir: Path) -> tuple[str, dict[str, Any]]:
    """The run's preset and the settings the user gave: the keys of its ``config.yaml`` that differ both from
    the preset as written and from the preset as a run resolves it (so what the run filled in itself, such
    as ``train.precision_requested``, an ``auto`` value, or ``channels_last`` following the precision the run
    was given, is not taken for a choice of the user's)."""
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
        written = load_config(preset)
        raw = _flatten(written.to_dict())
        resolved = _flatten(resolve_config(written).to_dict())
        flat = _flatten(saved)
        # what the run resolved itself at the precision it ran at (channels_last=auto follows the precision)
        at_precision = resolved
        if isinstance(flat.get("train.precision"), str):
            ran_at = load_config(preset, [f"train.precision={flat['train.precision']}"])
            at_precision = _flatten(resolve_config(ran_at).to_dict())
    except ConfigError:  # a preset from a YAML file that is no longer here: the name alone
        return preset, {}
    missing = object()
    settings = {
        key: value
        for key, value in flat.items()
        if key not in _UNINFORMATIVE
        and raw.get(key, missing) != value
        and resolved.get(key, missing) != value
        and (key == "train.precision" or at_precision.get(key, missing) != value)
    }
    return preset, settings


def run_label(run_dir: Path) -> str:
    """``preset key=value ...``: the run's preset and the settings the user gave (:func:`user_settings`)."""
    preset, settings = user_settings(run_dir)
    return " ".join([preset, *(f"{k}={v}" for k, v in settings.items())])


def run_labels(run_dirs: list[Path]) -> tuple[list[str], str]:
    """One label per run (its preset and the user's settings that differ among the runs; the folder's name,
    or its path, where two would read the same) and the settings every run shares (``key=value ...``: a title)."""
    found = [user_settings(d) for d in run_dirs]
    missing = object()
    keys = list(dict.fromkeys(k for _, s in found for k in s))
    shared = [k for k in keys if len({repr(s.get(k, missing)) for _, s in found}) == 1] if len(found) > 1 else []
    labels = []
    for preset, settings in found:
        labels.append(" ".join([preset, *(f"{k}={v}" for k, v in settings.items() if k not in shared)]))
    for where in (lambda d: Path(d).name, str):
        if len(set(labels)) == len(labels):
            break
        labels = [f"{label} ({where(d)})" for label, d in zip(labels, run_dirs)]
    common = " ".join(f"{k}={found[0][1][k]}" for k in shared)
    return labels, common


def _read_csv(path: Path, wanted: tuple[str, ...]) -> Curves:
    curves: Curves = {}
    try:
        for row in csv.DictReader(io.StringIO(read_text(path, CSV_LIMIT), newline="")):
            step = float(row["step"])
            for key, text in row.items():
                if key and key.startswith(wanted) and text not in (None, ""):
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


def read_curves(run_dir: Path) -> Curves:
    """Column -> (global steps, values): every ``loss*`` column of the run's ``steps.csv`` (``metrics.csv``
    without one) and every online-probe accuracy column (percent) of its ``metrics.csv``."""
    run_dir = Path(run_dir)
    steps, metrics = run_dir / "steps.csv", run_dir / "metrics.csv"
    if not steps.exists() and not metrics.exists():
        raise FileNotFoundError(f"{run_dir} has neither steps.csv nor metrics.csv; has it trained a step?")
    curves = _read_csv(steps if steps.exists() else metrics, (LOSS_PREFIX,))
    if metrics.exists():
        probes = _read_csv(metrics, PROBE_PREFIXES)
        curves.update({_probe_column(k): v for k, v in probes.items()})
    return curves


def _probe_column(key: str) -> str:
    """``probe_acc_pct_<layer>`` for a column of either name (files from before the unit was in the name)."""
    for prefix in PROBE_PREFIXES:
        if key.startswith(prefix):
            return PROBE_PREFIXES[0] + key[len(prefix) :]
    return key


def _probe_curve(curves: Curves) -> tuple[list[float], list[float]] | None:
    """The run's all-layers online-probe curve (its last layer's when it probed one layer)."""
    probes = sorted(k for k in curves if k.startswith(PROBE_PREFIXES[0]))
    if not probes:
        return None
    return curves.get(PROBE_PREFIXES[0] + "all", curves[probes[-1]])


def _layer_order(column: str) -> tuple[int, str]:
    """``loss_l2`` before ``loss_l10``; a column without a layer number after those with one."""
    digits = column.rsplit("_l", 1)[-1]
    return (int(digits), column) if digits.isdigit() else (10**6, column)


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    """One figure, one panel per loss column and one for the online probe's accuracy when a run has it, one
    line per run; returns the written path."""
    import matplotlib

    matplotlib.use("Agg")

    fig = curves_figure(run_dirs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out, dpi=120)
    return out


def curves_figure(run_dirs: list[Path]) -> Any:
    """The :func:`plot_runs` figure (a ``matplotlib.figure.Figure``), not yet saved."""
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise ValueError("give at least one run directory")
    labels, common = run_labels(run_dirs)
    runs = [read_curves(d) for d in run_dirs]
    panels: list[str] = []
    for curves in runs:
        panels += [c for c in curves if c.startswith(LOSS_PREFIX) and c not in panels]
    panels.sort(key=_layer_order)
    if any(_probe_curve(c) for c in runs):
        panels.append(ACCURACY_PANEL)
    if not panels:
        raise ValueError("none of the runs logged a loss or online-probe column")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for i, curves in enumerate(runs):
            line = _probe_curve(curves) if panel == ACCURACY_PANEL else curves.get(panel)
            if line is None:
                continue
            xs, ys = line
            ax.plot(
                xs,
                ys,
                color=f"C{i % 10}",
                linestyle=_STYLES[i % len(_STYLES)],
                marker=_MARKERS[i % len(_MARKERS)],
                markevery=max(1, len(xs) // 8),
                markersize=4,
                markerfacecolor="none",
                lw=1.2,
                label=labels[i],
            )
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("step")
        ax.ticklabel_format(axis="both", useOffset=False, style="plain")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    order = [label for label in labels if label in handles]
    fig.legend(
        [handles[label] for label in order],
        order,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=1,
        fontsize=8,
        frameon=False,
    )
    if common:
        fig.suptitle(f"all runs: {common}", fontsize=8, wrap=True)
    fig.tight_layout()
    return fig
