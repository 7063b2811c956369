"""The demo's figure (``OUT/demo.png``) and the text inside its CIFAR-10 panel, from the summary
:func:`localssl.demo.summarize` makes."""

from __future__ import annotations

from pathlib import Path

from localssl.utils import save_figure


def cifar_caveat(rows: dict[str, dict]) -> str:
    """The text inside the CIFAR panel: each method's gap to random init of its own network, measured in this
    run (a gap counts when it exceeds the two standard deviations summed), and, when the two-minute runs do not
    clear random init, the budget at which the CIFAR-10 benchmark of docs/rules.md sees local learning pass it."""
    lines, own_above = [], False
    for key, r in rows.items():
        if key.startswith("random"):
            continue
        ref = rows[r.get("reference", "random")]
        gap = r["test_mean"] - ref["test_mean"]
        above = gap > r["test_std"] + ref["test_std"]
        own_above |= above and not key.startswith("shipped-")
        first, *rest = r["label"].split("\n")
        label = f"{first} ({', '.join(rest)})" if rest else first
        lines.append(f"{label}: {gap:+.1f} points, {'above' if above else 'not above'} {ref['label']}")
    steps = max(r["steps"] for k, r in rows.items() if not k.startswith("shipped-"))
    if own_above:
        lines.append(f"the demo's own runs: {steps} pretraining steps")
    else:
        lines.append(f"random conv features are a strong floor on CIFAR-10: after {steps} steps")
        lines.append("no encoder trained here clears it; CLAPP++ passed it after ~1500 steps")
        lines.append("at width 1/4 on full CIFAR-10 (docs/rules.md, CIFAR-10 benchmark)")
    return "\n".join(lines)


def plot_demo(
    summary: dict[str, dict[str, dict]],
    path: Path,
    titles: dict[str, str],
    chance: dict[str, float],
    budgets: dict[str, str],
    seeds: int,
) -> None:
    """Bars of the mean test accuracy, error bars ± one std over seeds, each seed a dot; chance and
    random-init lines; each panel's title, its budget in words (``budgets``) and the steps of its own runs; the
    shipped encoders (and their random init) right of a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    palette = ["#1f77b4", "#ff7f0e", "#d62728"]
    widths = [max(5.2, 1.25 * len(summary[t])) for t in tasks]
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(sum(widths), 5.0), squeeze=False, gridspec_kw={"width_ratios": widths}
    )
    for ax, task in zip(axes[0], tasks):
        rows = summary[task]
        keys = list(rows)
        x = range(len(keys))
        means = [rows[k]["test_mean"] for k in keys]
        trained = [k for k in keys if not k.startswith(("random", "shipped-"))]
        cols = [
            "#999999"
            if k.startswith("random")
            else "#2ca02c"
            if k.startswith("shipped-")
            else palette[trained.index(k) % 3]
            for k in keys
        ]
        bars = ax.bar(x, means, yerr=[rows[k]["test_std"] for k in keys], capsize=4, color=cols, alpha=0.85)
        ax.bar_label(
            bars,
            labels=[f"{rows[k]['test_mean']:.1f}\n±{rows[k]['test_std']:.1f}" for k in keys],
            label_type="center",
            fontsize=8,
            color="white",
            fontweight="bold",
        )
        for i, k in enumerate(keys):
            ax.plot([i] * len(rows[k]["test"]), rows[k]["test"], "k.", ms=3)
        ax.axhline(chance[task], color="k", ls=":", lw=1, label=f"chance ({chance[task]:.1f} %)")
        if "random" in rows:
            ax.axhline(rows["random"]["test_mean"], color="#666666", ls="--", lw=1, label="random init")
        first_shipped = next((i for i, k in enumerate(keys) if k.startswith("random-")), None)
        if first_shipped is not None:  # the shipped encoders and their random init: trained elsewhere
            ax.axvline(first_shipped - 0.5, color="#666666", ls=":", lw=1)
        ax.set_xticks(list(x), [rows[k]["label"] for k in keys], fontsize=7, rotation=12)
        top = max(m + rows[k]["test_std"] for m, k in zip(means, keys))
        ax.set_ylim(0, min(100, top * 1.25))
        ax.set_ylabel("linear-probe test accuracy (%)")
        steps = max(rows[k]["steps"] for k in keys if not k.startswith("shipped-"))
        budget_text = f"{budgets[task]}\n{steps} steps, {seeds} seeds"
        ax.set_title(f"{titles[task]}\n{budget_text}", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
        if task == "cifar":
            box = {"facecolor": "white", "alpha": 0.9, "edgecolor": "#cccccc"}
            below = 68 if first_shipped is not None else 48  # points under the panel: clear of the tick labels
            ax.annotate(
                cifar_caveat(rows),
                (0.5, 0.0),
                xycoords="axes fraction",
                xytext=(0, -below),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=7,
                bbox=box,
            )
    fig.suptitle("localssl demo: mean ± std over seeds (dots: each seed)", fontsize=10)
    save_figure(fig, path, dpi=120)
