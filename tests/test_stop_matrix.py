"""Every layout × every way to stop, then ``--resume``: the run's records equal the uninterrupted run's, every file,
bitwise except the wall-clock fields docs/usage.md lists (issue 36, items 3 and 4).

Layouts: one process, data-parallel (2 gloo ranks), layer-parallel (2 stages). Ways to stop: a stop signal
(SIGTERM) to each rank, ``kill -9`` of each rank. Oracle: the same run, same layout, uninterrupted; compared file
by file (CSV rows less the wall-clock columns, JSON less the wall-clock keys, checkpoints tensor by tensor less the
mid-epoch position's seconds). The default suite keeps one case of each layout (a signal to a rank other than 0
where there is one, kill -9 of rank 0 for data-parallel); ``-m slow`` runs the full matrix."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SIXTY_IMAGES, start_ranks, write_cifar_pickles

# 60 images, batch 6: 10 steps an epoch on one process or layer-parallel, 5 data-parallel (2 ranks × 6); 2 epochs.
# A mid-epoch checkpoint every 4 global steps (what a kill falls back to), a logged row every 3.
SETUP = [*SIXTY_IMAGES, "train.log_every=3", "train.checkpoint_every=4", "train.stage_timeout=20"]
LAYOUTS = {"one": (0, []), "data": (2, []), "layers": (2, ["train.parallel=layers"])}
STEPS = {"one": 20, "data": 10, "layers": 20}  # global steps of the whole run

# Fields that record the wall clock or the machine, not the training (docs/usage.md, "Resume"): every other
# field of every file is bitwise the uninterrupted run's.
WALL_CLOCK_COLUMNS = {"seconds", "images_per_s", "online_probe_s"}
WALL_CLOCK_KEYS = {"images_per_s", "seconds", "online_probe_s", "peak_memory_per_rank", "stages", "held_per_rank"}
# ("stages": layer-parallel cuts chosen by timing each block at start, train.stage_bounds=auto, and what each stage
# holds with them; the weights are the same whatever the cuts)


def _launch(layout: str, argv: list[str], cwd: Path, fault: str | None = None) -> list[tuple[int, str]]:
    n, extra = LAYOUTS[layout]
    procs = start_ranks(n, argv if "--resume" in argv else [*argv, *extra], cwd, fault=fault)
    out = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:  # a peer of a killed rank that did not notice: end it too
            p.kill()
            _, err = p.communicate()
        out.append((p.returncode, err))
    return out


def _run(layout: str, base: Path, fault: str | None = None) -> tuple[Path, list[tuple[int, str]]]:
    """A run of ``layout`` in ``base/runs`` on the data in ``base/data``: every run of a layout has the same
    config.yaml (``out_dir`` and ``data.root`` included), so that its bytes compare too."""
    out = base / "runs"
    before = set(out.iterdir()) if out.exists() else set()
    args = ["pretrain", "clapp++", *SETUP, f"data.root={base / 'data'}", f"out_dir={out}"]
    results = _launch(layout, args, base, fault)
    (run,) = set(out.iterdir()) - before
    return run, results


def _csv(path: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(path.read_text(), newline="")))
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS} for r in rows]


def _drop(tree: Any, keys: set[str]) -> Any:
    if isinstance(tree, dict):
        return {k: _drop(v, keys) for k, v in tree.items() if k not in keys}
    if isinstance(tree, list):
        return [_drop(v, keys) for v in tree]
    return tree


def _differences(a: Any, b: Any, where: str) -> list[str]:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
        return [] if same and a.shape == b.shape and torch.equal(a, b) else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def assert_same_records(got: Path, want: Path) -> None:
    """Every file of the run ``got`` equals the uninterrupted run ``want``'s, but for the wall-clock fields."""
    names = sorted(p.name for p in got.iterdir())
    assert names == sorted(p.name for p in want.iterdir()), names
    wrong: list[str] = []
    for name in names:
        a, b = got / name, want / name
        if name.endswith(".csv"):
            wrong += _differences(_csv(a), _csv(b), name)
        elif name.endswith(".json"):
            wrong += _differences(*(_drop(json.loads(p.read_text()), WALL_CLOCK_KEYS) for p in (a, b)), name)
        elif name.endswith(".pt"):
            ckpts = [torch.load(p, weights_only=True) for p in (a, b)]
            for c in ckpts:
                if "position" in c:
                    c["position"].pop("seconds")  # the seconds the epoch had taken: wall clock
            wrong += _differences(*ckpts, name)
        elif a.read_bytes() != b.read_bytes():
            wrong.append(name)
    assert not wrong, wrong


_bases: dict[str, tuple[Path, Path]] = {}


@pytest.fixture
def reference(tmp_path_factory):
    """``(folder, uninterrupted run)`` of a layout, made once per session and layout: the folder holds the data
    (the 60 images of ``cifar_root``) and ``runs/``, where the test's own runs go too."""

    def make(layout: str) -> tuple[Path, Path]:
        if layout not in _bases:
            base = tmp_path_factory.mktemp(f"stop-{layout}")
            write_cifar_pickles(base / "data")
            run, results = _run(layout, base)
            assert all(rc == 0 for rc, _ in results), results[0][1][-3000:]
            _bases[layout] = (base, run)
        return _bases[layout]

    return make


# the global step at which the fault comes: a signal early (data-parallel: before its first logged row at 3,
# layer-parallel stage 1: reported with the row at 3), a kill after a mid-epoch checkpoint (every 4 steps)
AT = {("one", "term"): 4, ("one", "kill"): 7, ("data", "term"): 2, ("data", "kill"): 9}
AT.update({("layers", "term"): 2, ("layers", "kill"): 7})


def _stop_then_resume(layout: str, how: str, rank: int, reference) -> None:
    base, want = reference(layout)
    at = AT[layout, how]
    run, results = _run(layout, base, fault=f"{rank}:{at}:{how}")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    if how == "term":  # every process stops at one step with one checkpoint, and says how to continue
        assert [rc for rc, _ in results] == [130] * len(results), [err[-2000:] for _, err in results]
        assert "--resume" in results[0][1], results[0][1][-2000:]
        assert at <= ckpt["global_step"] < STEPS[layout] and "position" in ckpt, ckpt["global_step"]
    else:  # kill -9: that process is gone, the others stop on their own; the last checkpoint before it is kept
        assert results[rank][0] == -9, results[rank]
        assert all(rc != 0 for rc, _ in results), [err[-2000:] for _, err in results]
        assert 0 < ckpt["global_step"] < at, ckpt["global_step"]
    resumed = _launch(layout, ["pretrain", "--resume", str(run)], base)
    assert all(rc == 0 for rc, _ in resumed), [err[-3000:] for _, err in resumed]
    assert_same_records(run, want)


MATRIX = [
    (layout, how, rank) for layout in LAYOUTS for how in ("term", "kill") for rank in range(max(LAYOUTS[layout][0], 1))
]
DEFAULT = {("one", "term", 0), ("data", "kill", 0), ("layers", "term", 1)}


@pytest.mark.parametrize(("layout", "how", "rank"), sorted(DEFAULT))
def test_a_stopped_run_resumes_to_the_uninterrupted_records(reference, layout, how, rank):
    _stop_then_resume(layout, how, rank, reference)


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "how", "rank"), [c for c in MATRIX if c not in DEFAULT])
def test_every_layout_and_way_to_stop_resumes_to_the_uninterrupted_records(reference, layout, how, rank):
    _stop_then_resume(layout, how, rank, reference)
