"""What the theory figures share (CLAPP++ Sec. 3, App. B, D; ``theory_figs.py`` and ``alignment_figs.py``):
one-thread simulations, the MNIST images, a figure's computation as a cell of the engine (:func:`measured`),
per-layer summaries of the cosines, their tables and plots, and the claims each figure checks, written into
``results.md`` beside ``results.csv``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from localssl.experiments.engine import Cell, run_cells
from localssl.utils import save_figure


@dataclasses.dataclass(frozen=True)
class MnistImages:
    """``mnist_images(split, n)``, loaded where the cell runs (not by ``--status``, not shipped to a job)."""

    split: str
    n: int | None = None


def measured(name: str, label: str, measure: Callable[..., Any], *args: Any) -> Any:
    """``measure(*args)`` (a :class:`MnistImages` among ``args`` loaded first) as the one cell of figure
    ``name``: in this process locally, one job on SLURM, listed by ``--status``."""
    return run_cells(name, [Cell(name, label, _apply, (measure, args))])[0]


def _apply(piece: tuple[Callable[..., Any], tuple]) -> Any:
    measure, args = piece
    return measure(*(mnist_images(a.split, a.n) if isinstance(a, MnistImages) else a for a in args))


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """The theory networks are tiny: intra-op threads only add synchronisation (and stall badly on a
    loaded machine), so their simulations run on one thread; the previous setting is restored."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def mnist_images(split: str, n: int | None = None) -> torch.Tensor:
    """MNIST images (uint8 N×1×28×28) from the default data root (``$LOCALSSL_DATA``, ./data,
    ../shared/data); the first ``n`` in file order."""
    from localssl.data import load_split

    images = load_split("mnist", split).images
    return images if n is None else images[:n]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv

    if not rows:
        raise ValueError(f"no rows to write to {path}")
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def summarize(rows: list[dict[str, Any]], group: tuple[str, ...], value: str = "cosine") -> dict[tuple, tuple]:
    """``(group values..., layer) -> (mean, std, n)`` over all other keys (seeds, batches)."""
    acc: dict[tuple, list[float]] = {}
    for r in rows:
        acc.setdefault((*(r[g] for g in group), r["layer"]), []).append(float(r[value]))
    out = {}
    for k, v in acc.items():
        t = torch.tensor(v, dtype=torch.float64)
        out[k] = (float(t.mean()), float(t.std(unbiased=False)), len(v))
    return out


def layer_table(summary: dict[tuple, tuple], groups: list[tuple], n_layers: int, label: str) -> str:
    head = f"| {label} | " + " | ".join(f"layer {i}" for i in range(1, n_layers + 1)) + " |"
    sep = "|---" * (n_layers + 1) + "|"
    lines = [head, sep]
    for g in groups:
        cells = []
        for layer in range(1, n_layers + 1):
            m, s, _ = summary[(*g, layer)]
            cells.append(f"{m:.4f} ± {s:.3f}")
        lines.append(f"| {' / '.join(str(x) for x in g)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_layers(
    path: Path, summary: dict[tuple, tuple], groups: list[tuple], n_layers: int, title: str, ylim=(-0.2, 1.05)
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = list(range(1, n_layers + 1))
    for g in groups:
        m = [summary[(*g, x)][0] for x in xs]
        s = [summary[(*g, x)][1] for x in xs]
        ax.errorbar(xs, m, yerr=s, capsize=3, marker="o", alpha=0.8, label=" / ".join(str(v) for v in g))
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine similarity with the BP update")
    ax.set_xticks(xs)
    ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=120)


@dataclasses.dataclass
class Claim:
    text: str
    holds: bool
    detail: str

    def line(self) -> str:
        return f"- [{'x' if self.holds else ' '}] {self.text} — {self.detail}"


def claims_md(claims: list[Claim]) -> str:
    return "\n".join(c.line() for c in claims)


def finish(out: Path, name: str, rows, solver_rows, md: str, claims: list[Claim]) -> None:
    write_csv(out / "results.csv", rows)
    if solver_rows:
        write_csv(out / "solver.csv", solver_rows)
    text = f"{md}\n\n## Claims checked\n\n{claims_md(claims)}\n"
    (out / "results.md").write_text(text)
    print(text)
    failed = [c.text for c in claims if not c.holds]
    if failed:
        print(f"{name}: {len(failed)} claim(s) do not hold at this scale: {'; '.join(failed)}")
