"""Reports of a reproduced table: ``results.csv`` (long form), ``results.md`` (ours beside the published
numbers, scale and protocol stated), ``results.png``, and the repository's results page.

The results page ``docs/results.md`` is generated, never edited by hand: it collects every
``results/<experiment>/cpu/results.md`` of the repository and is rewritten whenever an experiment
writes its ``cpu`` results to that default place (``localssl reproduce NAME --scale cpu``).
"""

from __future__ import annotations

import csv
import importlib.metadata
import math
import re
import shutil
import subprocess
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from localssl.experiments.docs import render_docs
from localssl.experiments.engine.grid import DATASET_LABELS, GridResult, Row, format_mean_std, mean_std
from localssl.registry import ConfigError
from localssl.utils import save_figure


def _version() -> str:
    """The installed localssl's version (the package metadata; the package's public face sits above this)."""
    try:
        return importlib.metadata.version("localssl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


CSV_FIELDS = (
    "table",
    "scale",
    "method",
    "preset",
    "dataset",
    "data",
    "seed",
    "test_acc",
    "val_acc",
    "epochs",
    "steps",
    "run",
)
PAGE_ORDER = ("table2", "clapp2021-table1", "clapp2021-table5", "tableA3")


def repo_root() -> Path | None:
    """The source checkout holding this ``localssl`` package, or ``None`` for an installed copy."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").exists() else None


# What the harness and the benchmarks write themselves: not a code change (left out of the dirty check).
GENERATED = (":(exclude)results", ":(exclude)docs/results.md", ":(exclude)benchmarks/RESULTS.md")


def code_version() -> str:
    """``'localssl 0.1.0, commit abc1234'`` (+ a mark when tracked files other than the generated results
    differ from the commit)."""
    text = f"localssl {_version()}"
    root = repo_root()
    if root is None:
        return text
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".", *GENERATED],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return text
    if sha.returncode != 0:
        return text
    text += f", commit {sha.stdout.strip()}"
    if dirty.returncode == 0 and dirty.stdout.strip():
        text += " with uncommitted changes"
    return text


def format_published(row: Row, dataset: str) -> str:
    if dataset not in row.published:
        return "–"
    value = row.published[dataset]
    std = row.published_std.get(dataset)
    return format_mean_std([value]) if std is None else f"{value:.2f} ± {std:.2f}"


# --------------------------------------------------------------------------------------- csv
def write_csv(result: GridResult, path: Path) -> None:
    rows = []
    for c in result.cells:
        rows.append(
            {
                "table": result.table.name,
                "scale": result.scale.name,
                "method": c.row.label,
                "preset": c.row.preset,
                "dataset": c.dataset,
                "data": c.data,
                "seed": c.seed,
                "test_acc": round(c.test_acc, 4),
                "val_acc": round(c.val_acc, 4),
                "epochs": c.epochs,
                "steps": c.steps,
                "run": c.run_dir.name,
            }
        )
    from localssl.utils import atomic_write_bytes

    def write(fh) -> None:
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        fh.write(buf.getvalue().encode())

    atomic_write_bytes(path, write)


# --------------------------------------------------------------------------------------- markdown
def values(result: GridResult, row: Row, dataset: str) -> list[float]:
    return [c.test_acc for c in result.cells if c.row.label == row.label and c.dataset == dataset]


def markdown(result: GridResult) -> str:
    t, sc = result.table, result.scale
    cmd = f"localssl reproduce {t.name} --scale {sc.name} --seeds {result.seeds}"
    seeds = ", ".join(str(s) for s in range(result.seeds))
    lines = [
        f"# {t.title}",
        "",
        f"{t.metric[0].upper()}{t.metric[1:]}: ours at scale **`{sc.name}`** beside the published numbers "
        f"({t.source}).",
        "",
        f"- **Command:** `{cmd}` (regenerates this file, `results.csv` and `results.png`).",
        f"- **Protocol (scale `{sc.name}`):** {sc.protocol}",
        f"- **Seeds:** {result.seeds} ({seeds}); *ours* = mean ± sample standard deviation (n − 1) over seeds "
        "(a single seed shows the value alone; `(n=k)` marks a cell with fewer finished seeds); *published* = as "
        "reported, ± where the paper gives a standard deviation.",
        f"- **Code:** {code_version()}; generated {time.strftime('%Y-%m-%d %H:%M')}.",
    ]
    if result.only:
        names = ", ".join(f"`{p}`" for p in result.only)
        flags = " ".join(f"--only {p}" for p in result.only)
        lines.append(
            f"- **Partial re-run:** `{cmd} {flags}` re-ran the rows of {names}; every other row's per-seed values "
            "were kept from the previous `results.csv` (not re-run)."
        )
    made = Counter(c.provenance.get("code", "unknown") for c in result.cells)
    if made:
        versions = "; ".join(f"{code} ({n} runs)" for code, n in sorted(made.items()))
        pre = sum(c.provenance.get("pretrain_cpu_s", 0.0) for c in result.cells) / 3600
        pro = sum(c.provenance.get("probe_cpu_s", 0.0) for c in result.cells) / 3600
        lines.append(f"- **Runs created by:** {versions}.")
        timed = [c for c in result.cells if "pretrain_cpu_s" in c.provenance or "probe_cpu_s" in c.provenance]
        untimed = len(result.cells) - len(timed)
        lines.append(
            f"- **Compute:** {pre:.2f} CPU-hours of pretraining and {pro:.2f} of probing for these "
            f"{len(timed)} runs (process CPU time, all threads; wall time on a shared machine is longer)"
            + (f"; {untimed} runs without a record on disk are not counted." if untimed else ".")
        )
    lines.append("")
    header = ["Method", "Preset"]
    for ds in t.datasets:
        label = result.columns.get(ds, _plain_label(ds))
        header += [f"{label}: ours", "published"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in t.rows:
        cells = [row.label, f"`{row.preset}`"]
        for ds in t.datasets:
            if row.label in result.row_notes or ds in result.not_run:
                ours = "not run"
            elif row.datasets is not None and ds not in row.datasets:
                ours = "n/a"
            else:
                ours = format_mean_std(values(result, row, ds), n_expected=result.seeds)
                if ours == "–":
                    ours = "failed" if any(k[:2] == (row.label, ds) for k in result.failed) else "pending"
            cells += [ours, format_published(row, ds)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- **{_plain_label(ds)}:** {why}." for ds, why in result.not_run.items()]
    notes += [f"- **{label}:** {why}." for label, why in result.row_notes.items()]
    notes += [f"- **{label} · {ds} · seed {seed}:** failed: {why}" for (label, ds, seed), why in result.failed.items()]
    for row in t.rows:
        if row.note:
            notes.append(f"- **{row.label}:** {row.note}")
    notes += floor_notes(result)
    steps = {}
    for c in result.cells:
        steps.setdefault(result.columns[c.dataset], {}).setdefault(c.row.label, set()).add(c.steps)
    for column, per_row in steps.items():
        text = ", ".join(f"{label} {'/'.join(str(n) for n in sorted(n))}" for label, n in per_row.items())
        notes.append(f"- **Pretraining optimizer steps per run ({column}):** {text}.")
    if notes:
        lines += ["", "Notes:", "", *notes]
    if result.cells:
        lines += ["", "![ours beside the published numbers](results.png)"]
    lines += ["", f"Per-seed values: `results.csv`. Runs: {runs_location(result.runs_dir)}."]
    return "\n".join(lines) + "\n"


def runs_location(runs_dir: Path) -> str:
    """Where the run folders are, without naming a path of this machine: a folder inside the repository
    by its relative path, the default ``OUT/runs`` as "beside this file", anything else by its variable."""
    runs_dir = Path(runs_dir)
    root = repo_root()
    if not runs_dir.is_absolute():
        return f"`{runs_dir.as_posix()}`"
    if root is not None and runs_dir.resolve().is_relative_to(root.resolve()):
        return f"`{runs_dir.resolve().relative_to(root.resolve()).as_posix()}`"
    if runs_dir.name == "runs":
        return "`runs/` beside results.md"
    return "the folder named by `LOCALSSL_RUNS` when these runs were made"


def versus_floor(ours: Sequence[float], floor: Sequence[float]) -> tuple[float, str]:
    """Difference of means (points) and a verdict: ``above``/``below`` when it exceeds two standard
    errors of the difference (SE² = s²/n + s_f²/n_f, sample variances over seeds), else ``level``;
    ``one seed`` when either side has a single value (no spread to test against)."""
    (m, s), (mf, sf) = mean_std(ours), mean_std(floor)
    delta = m - mf
    if s is None or sf is None:
        return delta, "one seed"
    se = math.sqrt(s**2 / len(ours) + sf**2 / len(floor))
    return delta, "above" if delta > 2 * se else ("below" if delta < -2 * se else "level")


def floor_notes(result: GridResult) -> list[str]:
    """One note per (dataset, floor row): every compared row's difference from the floor and verdict."""
    notes = []
    for ds in result.table.datasets:
        groups: dict[str, dict[str, list[tuple[float, str]]]] = {}  # floor label -> verdict -> (delta, row)
        for row in result.table.rows:
            floor = result.table.floor_of(row)
            ours = values(result, row, ds)
            base = [] if floor is None else values(result, floor, ds)
            if not ours or not base:
                continue
            delta, verdict = versus_floor(ours, base)
            groups.setdefault(floor.label, {}).setdefault(verdict, []).append((delta, row.label))
        for floor_label, by_verdict in groups.items():
            parts = [
                f"*{v}*: " + ", ".join(f"{label} {d:+.2f}" for d, label in sorted(by_verdict[v], reverse=True))
                for v in ("above", "level", "below", "one seed")
                if v in by_verdict
            ]
            notes.append(
                f"- **Against {floor_label}, {result.columns.get(ds, _plain_label(ds))}:** difference of means "
                f"in points; *above*/*below* = more than two standard errors of the difference over seeds — "
                + "; ".join(parts)
                + "."
            )
    return notes


def _plain_label(dataset: str) -> str:
    return DATASET_LABELS.get(dataset, dataset)


# --------------------------------------------------------------------------------------- plot
def plot(result: GridResult, path: Path) -> None:
    """One panel per dataset that ran: ours (mean, std bar, seeds as dots) beside the published value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [ds for ds in result.columns if any(c.dataset == ds for c in result.cells)]
    rows = list(result.table.rows)
    fig, axes = plt.subplots(
        1, len(columns), figsize=(6.5 * len(columns), 0.45 * len(rows) + 1.6), squeeze=False, sharey=True
    )
    for ax, ds in zip(axes[0], columns):
        for i, row in enumerate(rows):
            vals = values(result, row, ds)
            if vals:
                mean, std = mean_std(vals)
                ax.barh(i - 0.2, mean, height=0.4, color="#1f77b4", xerr=std or 0, capsize=2)
                ax.plot(vals, [i - 0.2] * len(vals), "k.", ms=3)
            elif row.label in result.row_notes:
                ax.text(1, i - 0.2, "not run (no preset)", va="center", fontsize=7, color="#888888")
            if ds in row.published:
                ax.barh(i + 0.2, row.published[ds], height=0.4, color="#bbbbbb", xerr=row.published_std.get(ds, 0))
        ax.set_title(textwrap.fill(result.columns[ds], 60), fontsize=9)
        ax.set_xlabel(result.table.metric)
        ax.set_xlim(0, 100)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(rows)), [r.label for r in rows], fontsize=8)
    axes[0][0].invert_yaxis()
    seeds = f"{result.seeds} seed" + ("s" if result.seeds > 1 else "")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color="#1f77b4", label=f"ours (scale {result.scale.name}, {seeds})"),
        plt.Rectangle((0, 0), 1, 1, color="#bbbbbb", label="published"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(result.table.title, fontsize=10)
    save_figure(fig, path, dpi=110, rect=(0, 0.05, 1, 1))


# --------------------------------------------------------------------------------------- all reports
def write_reports(result: GridResult, out: Path, figure: bool = True) -> None:
    from localssl.utils import atomic_write_bytes

    out = Path(out)
    write_csv(result, out / "results.csv")
    text = markdown(result)
    atomic_write_bytes(out / "results.md", lambda fh: fh.write(text.encode()))
    if figure and result.cells:
        plot(result, out / "results.png")
    root = repo_root()
    default_out = None if root is None else root / "results" / result.table.name / "cpu"
    if result.scale.name == "cpu" and out.resolve() == default_out:
        write_results_page(root)
        render_docs(root)  # the README's and docs' tables drawn from results/


def write_results_page(root: Path) -> Path:
    """Regenerate ``root/docs/results.md`` from every ``root/results/*/cpu/results.md``."""
    from localssl.utils import atomic_write_bytes

    path = root / "docs" / "results.md"
    text = results_page(root)
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))
    return path


def results_page(root: Path) -> str:
    """The text of ``docs/results.md``: every ``root/results/*/cpu/results.md``, one heading level down."""
    found = {p.parent.parent.name: p for p in sorted((root / "results").glob("*/cpu/results.md"))}
    order = [n for n in PAGE_ORDER if n in found] + sorted(n for n in found if n not in PAGE_ORDER)
    paper = sorted((root / "results").glob("*/paper/results.md"))
    lines = [
        "# Reproduced tables",
        "",
        "<!-- Generated by `localssl reproduce NAME --scale cpu` from results/*/cpu/results.md. Do not edit. -->",
        "",
        "This page is written by the reproduction harness (`localssl reproduce NAME --scale cpu`), never by hand.",
        "It holds the latest `cpu`-scale tables: a reduced protocol (stated under each table) that runs on 2 CPU",
        "cores. Compare the methods with each other at that scale; the published numbers were obtained with the",
        "full protocol (`--scale paper`: full width, 300 epochs, the paper's batch size).",
        "",
    ]
    if paper:
        links = ", ".join(f"[{p.parent.parent.name}](../{p.relative_to(root).as_posix()})" for p in paper)
        lines += [f"`--scale paper` results: {links}.", ""]
    else:
        lines += ["No `--scale paper` results are in the repository yet: that protocol needs a GPU.", ""]
    for name in order:
        body = found[name].read_text()
        rel = f"../results/{name}/cpu/"
        body = re.sub(r"^(#+) ", r"#\1 ", body, flags=re.M)  # one heading level down
        body = re.sub(r"\]\((?![a-z]+:|#|/)([^)\s]+)\)", rf"]({rel}\1)", body)  # relative links: from docs/ now
        body = body.replace("`results.csv`", f"[`results.csv`]({rel}results.csv)")
        lines += [body.rstrip(), ""]
    return "\n".join(lines)


def write_docs(copy: dict[Path, str] | None = None) -> list[Path]:
    """``localssl reproduce --docs`` (and ``localssl demo --docs``): copy each ``copy`` source file to its path in
    the source checkout, then regenerate ``docs/results.md`` and every generated region of README.md and docs/;
    prints and returns the pages that changed."""
    root = repo_root()
    if root is None:
        raise ConfigError("--docs rewrites a source checkout's README.md and docs/; this localssl is installed")
    for src, rel in (copy or {}).items():
        shutil.copyfile(src, root / rel)
    write_results_page(root)
    changed = render_docs(root)
    for page in changed:
        print(f"rewrote {page.relative_to(root)}")
    return changed
