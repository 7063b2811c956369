"""The examples/ scripts run through the public API (tiny settings, seconds)."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

from localssl.registry import OBJECTIVES

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_custom_objective_registered_from_user_code_trains_and_probes(pattern_cifar_root, tmp_path, monkeypatch):
    OBJECTIVES.names()  # the built-ins first, then a copy that forgets the example's registration afterwards
    monkeypatch.setattr(OBJECTIVES, "_entries", dict(OBJECTIVES._entries))
    monkeypatch.delitem(sys.modules, "example_custom_objective", raising=False)
    example = _load("custom_objective")
    tiny = ["model.width=0.0625", "train.batch_size=32", "train.device=cpu", "train.progress=false"]
    result = example.main(
        [*tiny, "train.epochs=2", f"data.root={pattern_cifar_root}", f"out_dir={tmp_path / 'runs'}", "probe.epochs=15"]
    )
    (run,) = list((tmp_path / "runs").iterdir())
    assert "cosine-variance" in (run / "config.yaml").read_text()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(rows[1][f"loss_l{k}"]) < float(rows[0][f"loss_l{k}"]) for k in range(1, 7))  # minimised
    assert result["test_acc"] > 0.3  # chance is 0.1
    assert not any(p.name.startswith("features-") for p in run.iterdir())
