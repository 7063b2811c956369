"""The paper's probe protocol (``probe.protocol=paper``), ``--per-layer`` and ``probe.json`` keyed by protocol."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from localssl.cli import main
from localssl.config import ProbeConfig, load_config
from localssl.evaluate.paper_probe import paper_test_transform, paper_train_transform, train_paper_probe
from localssl.evaluate.probe import store_result
from localssl.registry import ConfigError
from localssl.train import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false"]


@pytest.fixture
def random_run(pattern_cifar_root, tmp_path):
    """The VGG-6 at init (width 1/16) on 200 labelled / 100 test images with class-dependent blobs."""
    return pretrain(load_config("random", [*TINY, f"data.root={pattern_cifar_root}", f"out_dir={tmp_path}"]))


def test_stl_test_transform_matches_torchvision_on_pil():
    """Resize(105) + CenterCrop(96) as the authors' torchvision pipeline does it on PIL images."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(arr).resize((105, 105), Image.BILINEAR).crop((4, 4, 100, 100)))
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    ours = paper_test_transform("stl10", (96, 96))(x)[0].permute(1, 2, 0).numpy() * 255
    assert ours.shape == ref.shape == (96, 96, 3)
    assert np.abs(ours - ref).mean() < 1.0 and np.abs(ours - ref).max() < 8  # PIL rounds to uint8
    assert paper_test_transform("cifar10", (32, 32)) is None  # CenterCrop(32) of a 32-px image


def test_every_epoch_draws_new_crops_of_every_image():
    """Each epoch encodes every train image once, through a crop drawn anew; batches of probe.batch_size."""
    n, epochs = 20, 3
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous()
    ramp = torch.arange(16, dtype=torch.uint8)
    images[:, 1] = 100 + 8 * ramp.view(16, 1) + ramp  # texture, so different crops of one image differ
    images[:, 2] = 255 - 15 * ramp.view(1, 16)
    crop = paper_train_transform((16, 16))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def transform(x):
        out = crop(x)
        seen.append((x.clone(), out.clone()))
        return out

    def encode(x):
        return x.mean(dim=(2, 3))

    cfg = ProbeConfig(protocol="paper", epochs=epochs, batch_size=8)
    test_x, test_y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
    out = train_paper_probe(encode, images, torch.arange(n) % 2, test_x, test_y, 2, cfg, transform, "cpu")
    assert len(seen) == epochs and all(len(x) == n for x, _ in seen)  # chunks of 256 >= n: one call per epoch
    crops = []
    for x, y in seen:
        ids = (x[:, 0, 0, 0] * 255).round().long()  # the image's index (channel 0 holds it)
        assert sorted(ids.tolist()) == list(range(n))  # every image, once
        crops.append(y[ids.argsort()])
    for a, b in itertools.pairwise(crops):
        differ = [not torch.equal(a[i], b[i]) for i in range(n)]
        assert all(differ)  # a new crop of every image every epoch
    assert len(out["all"]["history"]) == epochs


def test_final_and_best_epoch_are_reported_apart(random_run):
    assert main(["probe", str(random_run), "probe.protocol=paper", "probe.epochs=3", "probe.progress=false"]) == 0
    data = json.loads((random_run / "probe.json").read_text())
    paper = data["paper"]
    hist = [row["test_acc_pct"] for row in paper["history"]]
    assert len(hist) == 3 and paper["test_acc_pct"] == hist[-1]  # "Test top1": the last epoch
    assert paper["best_test_acc_selected_on_test_pct"] == max(hist)  # "Validation top1": selected on test
    assert hist[paper["best_epoch_selected_on_test"] - 1] == max(hist)
    assert paper["n_val"] == 0 and paper["n_train"] == 200 and paper["n_test"] == 100  # all labelled images
    assert paper["protocol"] == "paper" and "c4ea488" in paper["reference"]
    assert "test_acc_pct" not in data  # no honest result yet: nothing at the top level
    assert not any(p.suffix == ".pt" and p.name != "checkpoint.pt" for p in random_run.iterdir())


def test_paper_probe_learns_above_chance(random_run):
    """On blobs whose colour and place give the class, a random encoder's features + crops beat chance."""
    args = ["probe.protocol=paper", "probe.epochs=8", "probe.progress=false", "probe.lr=0.003"]
    assert main(["probe", str(random_run), *args]) == 0
    paper = json.loads((random_run / "probe.json").read_text())["paper"]
    assert paper["best_test_acc_selected_on_test_pct"] > 40 and paper["test_acc_pct"] > 25  # chance is 10 (60, 43)


def test_probe_json_keeps_both_protocols_and_per_layer(random_run, capsys):
    honest = ["probe.epochs=2", "probe.val_size=40", "probe.progress=false"]
    assert main(["probe", str(random_run), *honest]) == 0
    assert main(["probe", str(random_run), "probe.protocol=paper", "probe.epochs=1", "probe.progress=false"]) == 0
    data = json.loads((random_run / "probe.json").read_text())
    assert data["test_acc_pct"] == data["honest"]["test_acc_pct"] and data["n_val"] == 40  # top level: honest
    assert data["paper"]["n_val"] == 0 and data["paper"]["checkpoint_epoch"] == data["checkpoint_epoch"]

    capsys.readouterr()
    assert main(["probe", str(random_run), "--per-layer", *honest]) == 0
    printed = capsys.readouterr().out
    assert "layer" in printed and "all" in printed
    data = json.loads((random_run / "probe.json").read_text())
    per = data["per_layer"]["honest"]
    assert set(per["results"]) == {"1", "2", "3", "4", "5", "6", "all"}
    dims = [per["results"][k]["feature_dim"] for k in "123456"]
    assert sum(dims) == per["results"]["all"]["feature_dim"] == data["honest"]["feature_dim"]
    # the "all" block is the plain protocol on the same features (same seed, same columns)
    assert per["results"]["all"]["test_acc_pct"] == pytest.approx(data["honest"]["test_acc_pct"])
    assert (random_run / "probe_per_layer_honest.png").stat().st_size > 1000
    assert "paper" in data and "honest" in data  # kept

    assert main(["probe", str(random_run), "--per-layer", "probe.protocol=paper", "probe.epochs=1"]) == 0
    data = json.loads((random_run / "probe.json").read_text())
    assert set(data["per_layer"]) == {"honest", "paper"}
    per = data["per_layer"]["paper"]["results"]
    assert set(per) == {"1", "2", "3", "4", "5", "6", "all"}
    assert per["all"]["history"] == data["paper"]["history"]  # same crops, same init: the plain paper run


def test_store_result_reads_old_files_and_drops_other_checkpoints(tmp_path):
    # a file from before the protocol keys and the unit in the key names: fractions, read as percent
    (tmp_path / "probe.json").write_text(json.dumps({"test_acc": 0.5, "val_acc": 0.4, "checkpoint_epoch": 3}))
    out = store_result(tmp_path, {"protocol": "paper", "test_acc_pct": 60.0, "checkpoint_epoch": 3})
    assert out["test_acc_pct"] == 50.0 and out["honest"]["val_acc_pct"] == 40.0 and out["paper"]["test_acc_pct"] == 60
    assert "test_acc" not in out and "test_acc" not in out["honest"]  # one unit in the file: percent
    out = store_result(tmp_path, {"protocol": "paper", "test_acc_pct": 70.0, "checkpoint_epoch": 4})
    assert out == {"paper": {"protocol": "paper", "test_acc_pct": 70.0, "checkpoint_epoch": 4}}  # epoch 3's: stale


def test_unknown_protocol_is_refused():
    with pytest.raises(ConfigError, match="probe.protocol='papers' is invalid"):
        load_config("clapp++", ["probe.protocol=papers"])
