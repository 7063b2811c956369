"""STL-10 as the papers and the authors' code use it: self-supervised pretraining on the ``unlabeled``
split only (CLAPP++ App. B; zihan-wu/local-SSL and EPFL-LCN/pub-illing2021-neurips load
``split='unlabeled'``), with the official codes' normalisation; ``data.pretrain_split=unlabeled+train``
keeps the earlier behaviour of localssl."""

import numpy as np
import torch

from localssl.build import build
from localssl.config import load_config
from localssl.data import dataset_info
from localssl.train import load_pretrain_data


def _write_stl10(root, n_train=4, n_test=2, n_unlabeled=3):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        (folder / f"{split}_X.bin").write_bytes(rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8).tobytes())
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes(rng.integers(1, 11, n, dtype=np.uint8).tobytes())


def test_stl10_pretrains_on_the_unlabeled_split_only(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))
    _write_stl10(tmp_path)
    base = ["data.name=stl10", f"data.root={tmp_path}"]
    data = load_pretrain_data(load_config("clapp++", base))
    assert len(data) == 3 and data.labels.tolist() == [-1, -1, -1]  # no labelled train image is pretrained on
    both = load_pretrain_data(load_config("clapp++", [*base, "data.pretrain_split=unlabeled+train"]))
    assert len(both) == 7 and (both.labels >= 0).sum() == 4
    assert len(load_pretrain_data(load_config("supervised", base))) == 4  # the supervised baseline needs labels


def test_stl10_views_use_the_official_normalisation():
    info = dataset_info("stl10")
    assert info.mean == (0.4313, 0.4156, 0.3663) and info.std == (0.2683, 0.2610, 0.2687)
    views = build(load_config("clapp++", ["data.name=stl10", "model.width=0.0625"])).views
    norm = views.normalize
    x = torch.full((1, 3, 2, 2), 0.5)
    expected = (0.5 - torch.tensor(info.mean)) / torch.tensor(info.std)
    torch.testing.assert_close(norm(x)[0, :, 0, 0], expected)
