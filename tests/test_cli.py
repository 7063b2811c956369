"""The command line's front door (issue 16): choices in ``--help``, ``localssl config``, options and
overrides in any order, ``bench`` writing files only when asked, a failed download exiting non-zero."""

from __future__ import annotations

import sys

import pytest

from localssl import bench as bench_module
from localssl.cli import main, preset_description
from localssl.config import CONFIG_DIR, available_presets
from localssl.data.catalog import DATASETS


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_help_lists_presets_experiments_and_datasets(capsys):
    for cmd in ("pretrain", "bench", "config"):
        text = _help(capsys, cmd)
        for name in available_presets():
            assert f"\n  {name} " in text, (cmd, name)
        assert "CLAPP++ (Delrocq et al. 2026)" in text  # one line of description per preset
        flat = " ".join(text.split())
        for name in available_presets():  # each description a whole sentence, wrapped, never cut mid-word
            described = preset_description((CONFIG_DIR / f"{name}.yaml").read_text())
            assert f" {name} {described}" in flat and described.endswith((".", " …")), name
        assert (
            " cpc CPC (van den Oord et al. 2018) on VGG-6 as in CLAPP 2021 Table 1: InfoNCE over 16 negatives drawn "
            "from any patch of the batch" in flat
        )
    text = _help(capsys, "reproduce")
    from localssl.experiments import load_all

    for name in load_all():
        assert f"\n  {name} " in text
    text = _help(capsys, "data", "download")
    for name in DATASETS:
        assert f"\n  {name}" in text


def test_config_prints_resolved_keys_with_meaning(capsys):
    assert main(["config", "clapp++", "train.epochs=7", "objective.f=softplus"]) == 0
    out = capsys.readouterr().out
    assert "train.epochs = 7" in out
    assert "objective.f = 'softplus'  # hinge relu(m−x)" in out  # the override, and the key's meaning
    assert "probe.val_size = 5000  # held out" in out
    assert main(["config", "clapp++", "train.nope=1"]) == 2  # unknown key: a clear error, not a traceback
    assert "nope" in capsys.readouterr().err


def _capture_bench(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr(bench_module, "main", lambda *a, **kw: calls.append((a, kw)))
    return calls


def test_bench_options_and_overrides_in_any_order(monkeypatch, tmp_path):
    calls = _capture_bench(monkeypatch)
    out = tmp_path / "f.json"
    assert main(["bench", "clapp++", "--out", str(out), "model.width=0.25", "--steps", "3", "train.batch_size=8"]) == 0
    (preset, _vs, overrides, out_arg, _results), kw = calls[0]
    assert preset == "clapp++" and overrides == ["model.width=0.25", "train.batch_size=8"]
    assert out_arg == out and kw["steps"] == 3
    with pytest.raises(SystemExit):  # a stray word is still an error
        main(["bench", "clapp++", "--out", str(out), "oops"])


def test_bench_writes_results_only_when_asked(monkeypatch, tmp_path):
    calls = _capture_bench(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "clapp++"]) == 0
    assert calls[0][0][4] is None  # no results file by default (used to append to ./benchmarks/RESULTS.md)
    assert main(["bench", "clapp++", "--results", "r.md"]) == 0
    assert str(calls[1][0][4]) == "r.md"


def test_download_that_did_not_happen_exits_nonzero(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # torchvision missing
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    assert main(["data", "download", "stl10", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "torchvision is not installed" in err and "stl10" in err.lower()
