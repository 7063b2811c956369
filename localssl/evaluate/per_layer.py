"""``localssl probe RUN --per-layer``: the table and the figure of each layer's probe accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localssl.utils import save_figure


def per_layer_table(result: dict[str, Any]) -> str:
    """Markdown table, one row per layer and one for all layers together: feature width and test
    accuracy (honest: with the validation accuracy that chose the epoch; paper: the last epoch's, and
    the best epoch's, labelled as selected on the test set)."""
    paper = result["protocol"] == "paper"
    if paper:
        head = "| layer | features | test acc, last epoch (%) | best epoch's test acc, selected on test (%) |"
    else:
        head = "| layer | features | test acc (%) | val acc (%) | best epoch (on val) |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for name, r in result["results"].items():
        label = "all" if name == "all" else f"layer {name}"
        if paper:
            extra = f"{r['best_test_acc_selected_on_test_pct']:.2f} (epoch {r['best_epoch_selected_on_test']})"
        else:
            extra = f"{r['val_acc_pct']:.2f} | {r['best_epoch']}"
        lines.append(f"| {label} | {r['feature_dim']} | {r['test_acc_pct']:.2f} | {extra} |")
    return "\n".join(lines)


def plot_per_layer(result: dict[str, Any], path: Path) -> Path:
    """Bar chart of each layer's test accuracy (and all layers'), written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["results"])
    acc = [result["results"][n]["test_acc_pct"] for n in names]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 3.2))
    xs = range(len(names))
    ax.bar(xs, acc, color=["C0"] * (len(names) - 1) + ["C1"])
    if result["protocol"] == "paper":
        best = [result["results"][n]["best_test_acc_selected_on_test_pct"] for n in names]
        ax.scatter(xs, best, marker="_", s=300, color="k", label="best epoch (selected on test)", zorder=3)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(list(xs), ["all" if n == "all" else n for n in names])
    ax.set_xlabel("layer")
    ax.set_ylabel("test accuracy (%)")
    epoch = result.get("checkpoint_epoch")
    ax.set_title(f"linear probe per layer ({result['protocol']} protocol, checkpoint epoch {epoch})", fontsize=9)
    for x, a in zip(xs, acc):
        ax.text(x, a, f"{a:.1f}", ha="center", va="bottom", fontsize=7)
    save_figure(fig, path, dpi=110)
    return path
