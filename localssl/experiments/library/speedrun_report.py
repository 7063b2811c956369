"""The speedrun's report (:mod:`localssl.experiments.library.speedrun`): ``results.csv``, ``results.md`` and
``results.png`` (linear-probe test accuracy against the budget's minutes) from the probed budgets on disk."""

from __future__ import annotations

import csv
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localssl.experiments.engine.grid import format_mean_std
from localssl.experiments.library.speedrun_scales import choice_rows, recipe
from localssl.utils import save_figure

FIELDS = (
    "rule",
    "width",
    "lr_factor",
    "seed",
    "budget_min",
    "steps",
    "test_acc",
    "val_acc",
    "train_wall_s",
    "train_cpu_s",
    "probe_wall_s",
    "probe_cpu_s",
    "warmup_min",
    "horizon_min",
)


def _width(w: float) -> str:
    return f"1/{round(1 / w)}" if w < 1 else f"{w:g}"


def _lr(factor: float, warmup: float) -> str:
    return f"×{factor:g}" + (f", warm-up {warmup:g} min" if warmup else "")


def final_rows(rows: list[dict[str, Any]], picks: Mapping[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each rule's rows at its chosen setting (every seed and budget), and random init's as ``random@<width>``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rule, pick in picks.items():
        out[rule] = [r for r in rows if r["rule"] == rule and recipe(r) == recipe(pick) and not r.get("horizon_min")]
    for r in rows:
        if r["rule"] == "random":
            out.setdefault(f"random@{r['width']}", []).append(r)
    return out


def write_report(
    out: Path,
    scale: str,
    sc: Any,
    seeds: int,
    rows: list[dict[str, Any]],
    picks: Mapping[str, dict[str, Any]],
) -> None:
    """Rewrite the three files from ``rows`` (every probed budget) and ``picks`` (rule -> its chosen candidate)."""
    out = Path(out)
    rows = sorted(rows, key=lambda r: (r["rule"], r["width"], r["lr_factor"], r["seed"], r["budget_min"]))
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    finals = final_rows(rows, picks)
    rules = [*sc.main, *sc.others]
    floor = {float(k.split("@")[1]): statistics.mean(r["test_acc"] for r in v) for k, v in finals.items() if "@" in k}
    budgets = sc.budgets
    last = budgets[-1]
    lines = [
        f"# Time to accuracy on CIFAR-10 (scale `{scale}`)",
        "",
        f"- **Command:** `localssl reproduce speedrun --scale {scale} --seeds {seeds} --jobs {sc.jobs}` (finished "
        "budgets are reused; `--only RULE` runs one rule).",
        f"- **Protocol:** {sc.protocol}",
        f"- **Seeds:** {seeds} for {', '.join(sc.main)} and random init"
        + ("; 1 for the others." if sc.others else ".")
        + " Linear-probe test accuracy (%), mean ± sample std over seeds; `(n=k)`: only k seeds finished.",
        "- **Time:** training wall and CPU minutes of the run at the last budget (mean over seeds), and the wall "
        f"minutes of one probe, apart. The budgets are steps ({sc.unit}); the times are what the steps took here"
        + (", two runs at once on 2 cores." if sc.threads == 1 else f", one run at a time with {sc.threads} threads."),
        "",
        "| rule | width | lr | "
        + " | ".join(f"{b} min" for b in budgets)
        + f" | {last} min − random init | steps at {last} min | train wall / CPU (min) | probe (min) |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in budgets) + " | ---: | ---: | ---: | ---: |",
    ]
    for key in sorted(k for k in finals if "@" in k):
        v = finals[key]
        width = float(key.split("@")[1])
        cells = [format_mean_std([r["test_acc"] for r in v], n_expected=seeds)] * len(budgets)
        probe_min = statistics.mean(r["probe_wall_s"] for r in v) / 60
        lines.append(
            f"| random init | {_width(width)} | – | " + " | ".join(cells) + f" | – | 0 | – | {probe_min:.1f} |"
        )
    for rule in rules:
        if rule not in picks:
            continue
        v, pick = finals[rule], picks[rule]
        n = seeds if rule in sc.main else 1
        cells = [format_mean_std([r["test_acc"] for r in v if r["budget_min"] == b], n_expected=n) for b in budgets]
        at_last = [r for r in v if r["budget_min"] == last]
        gain, steps, times = "–", "–", "–"
        if at_last:
            mean = statistics.mean(r["test_acc"] for r in at_last)
            if pick["width"] in floor:
                gain = f"{mean - floor[pick['width']]:+.2f}"
            steps = str(at_last[0]["steps"])
            wall = statistics.mean(r["train_wall_s"] for r in at_last) / 60
            cpus = [r["train_cpu_s"] for r in at_last if r["train_cpu_s"] not in (None, "")]
            cpu = f"{statistics.mean(float(c) for c in cpus) / 60:.1f}" if len(cpus) == len(at_last) else "–"
            times = f"{wall:.1f} / {cpu}"
        probe_min = statistics.mean(r["probe_wall_s"] for r in v) / 60 if v else float("nan")
        lines.append(
            f"| {rule} | {_width(pick['width'])} | {_lr(*recipe(pick)[1:])} | "
            + " | ".join(cells)
            + f" | {gain} | {steps} | {times} | {probe_min:.1f} |"
        )
    lines += [
        "",
        f"![Linear-probe test accuracy against {sc.unit}, each rule at its chosen setting](results.png)",
    ]
    cands = sc.candidates()
    if len(cands) > 1:  # else a setting fixed in advance: nothing was chosen
        lines += choice_table(rows, picks, sc, rules, cands)
    missing = [r for r in rules if r not in picks]
    if missing:
        lines += ["", f"**Not run yet:** {', '.join(missing)} (the same command continues)."]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(out / "results.png", finals, picks, budgets, scale, sc.unit)


def choice_table(
    rows: list[dict[str, Any]],
    picks: Mapping[str, dict[str, Any]],
    sc: Any,
    rules: list[str],
    cands: list[tuple[float, float, float]],
) -> list[str]:
    """The validation accuracy of every candidate at the selection budget (seed 0), and each rule's pick."""

    def setting(w: float, f: float, u: float) -> str:
        return f"width {_width(w)}, lr {_lr(f, u)}"

    how = (
        f"each candidate its own run of {sc.choice_budget} minutes (its schedule over those minutes); the chosen "
        "recipe's final run trained again from scratch"
        if sc.choice_budget
        else "the first minutes of each candidate's seed-0 run; the chosen one's run continues"
    )
    lines = [
        "",
        f"## The choice: validation accuracy (%) at {sc.select_at} min, seed 0",
        "",
        f"The probe's held-out train images (never the test split); the best candidate is the rule's setting ({how}).",
        "",
        "| rule | " + " | ".join(setting(*c) for c in cands) + " | chosen |",
        "| --- | " + " | ".join("---:" for _ in cands) + " | --- |",
    ]
    for rule in rules:
        at = {recipe(r): r["val_acc"] for r in choice_rows(rows, rule, sc)}
        if not at:
            continue
        pick = picks.get(rule)
        cells = [f"{at[c]:.2f}" if c in at else "not run" for c in cands]
        chosen = setting(*recipe(pick)) if pick else "not all run"
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {chosen} |")
    return lines


def plot(
    path: Path,
    finals: Mapping[str, list[dict[str, Any]]],
    picks: Mapping[str, Any],
    budgets: Any,
    scale: str,
    unit: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rule in picks:
        v = finals.get(rule, [])
        xs = [b for b in budgets if any(r["budget_min"] == b for r in v)]
        if not xs:
            continue
        accs = [[r["test_acc"] for r in v if r["budget_min"] == b] for b in xs]
        means = [statistics.mean(a) for a in accs]
        errs = [statistics.stdev(a) if len(a) > 1 else 0.0 for a in accs]
        ax.errorbar(xs, means, yerr=errs, marker="o", capsize=3, label=f"{rule} (width {_width(picks[rule]['width'])})")
    for key, v in finals.items():
        if "@" in key:
            mean = statistics.mean(r["test_acc"] for r in v)
            ax.axhline(mean, ls="--", color="gray", lw=1)
            ax.text(
                budgets[0],
                mean,
                f" random init, width {_width(float(key.split('@')[1]))}",
                va="bottom",
                fontsize=7,
                color="gray",
            )
    ax.set_xscale("log")
    ax.set_xticks(list(budgets), [str(b) for b in budgets])
    ax.set_xlabel(f"budget ({unit}, as steps)")
    ax.set_ylabel("linear-probe test accuracy (%)")
    ax.set_title(f"Time to accuracy on CIFAR-10 (speedrun, scale {scale})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    save_figure(fig, path, dpi=120)
