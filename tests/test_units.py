"""One unit in every file a user reads (issue 41 item 3): accuracies are percent and say so in their names;
``probe.json`` names a feature cache only when the file is there; a held-out set cut below what its setting
asks for is said in one line."""

from __future__ import annotations

import csv
import json

from localssl.cli import main
from localssl.config import load_config
from localssl.train import pretrain

TINY = ["model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false", "train.epochs=1"]


def test_run_files_and_probe_json_hold_percent_named_as_such(cifar_root, tmp_path, capsys):
    """Oracle: the 60-image fixture (a fifth: 12 held out) and the files' own headers and keys."""
    run = pretrain(
        load_config("clapp++", [*TINY, f"data.root={cifar_root}", f"out_dir={tmp_path}", "train.online_probe=true"])
    )
    err = capsys.readouterr().err
    assert "online probe: held-out set capped at 12 images, a fifth of the 60 labelled ones" in err
    assert "train.online_probe_holdout=5000" in err
    with (run / "metrics.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert "acc_pct_l1" in row and "probe_acc_pct_all" in row
    assert not [k for k in row if k.startswith("acc_l") or k.startswith("probe_acc_l") or k == "probe_acc_all"]
    assert 1.0 < float(row["acc_pct_l1"]) <= 100.0  # a share of positive pairs near a half: percent, not 0.5

    probe_args = ["probe.epochs=1", "probe.progress=false"]
    assert main(["probe", str(run), *probe_args]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert "probe: validation set capped at 12 images" in captured.err and "probe.val_size=5000" in captured.err
    stored = json.loads((run / "probe.json").read_text())
    assert stored["test_acc_pct"] == printed["test_acc_pct"] and "test_acc" not in stored
    assert stored["test_acc_pct"] in {100 * i / 20 for i in range(21)}  # 20 test images: a multiple of 5 %
    assert "cache" not in stored and not list(run.glob("features-*.pt"))  # no cache written: none named

    assert main(["probe", str(run), *probe_args, "probe.cache_features=true"]) == 0
    stored = json.loads((run / "probe.json").read_text())
    assert (run / stored["cache"]).is_file()


def test_a_long_decode_says_so_once_and_is_then_cached(tmp_path, monkeypatch, capsys):
    """The first read of an image archive (CIFAR-10's jpeg zip: 10-60 s) says what it does; the next reads the
    decoded cache silently. Oracle: the archive's own 4 images (the threshold lowered to 3)."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    from localssl.data import folder
    from localssl.data.readers import read_cifar10

    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(folder, "SAY_DECODE_FROM", 3)
    with zipfile.ZipFile(tmp_path / "cifar10-jpeg.zip", "w") as zf:
        for i, cls in enumerate(["airplane", "automobile", "bird", "cat"]):
            buf = io.BytesIO()
            Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(buf, format="PNG")
            zf.writestr(f"train/{cls}/{i}.png", buf.getvalue())
    data = read_cifar10(tmp_path, "train")
    assert len(data.images) == 4
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"decoding 4 images of {tmp_path / 'cifar10-jpeg.zip'}:train (once: kept decoded for later runs)"
    assert len(read_cifar10(tmp_path, "train").images) == 4
    assert capsys.readouterr().err == ""
