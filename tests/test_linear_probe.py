"""The linear probe's fit against a plain reference loop of its protocol (localssl.linear_probe)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from localssl.config import ProbeConfig
from localssl.linear_probe import FeatureSet, train_linear_probe, zscore_rows


def _reference_fit(fs: FeatureSet, cfg: ProbeConfig, num_classes: int) -> tuple[nn.Linear, list[float], int]:
    """The protocol written out plainly: Adam on the cross-entropy of ``(x[idx].float() - mean) / std`` for
    each shuffled batch, the best-validation epoch's classifier kept."""
    g = torch.Generator().manual_seed(cfg.seed)
    ref = fs.train[0].float()
    mean, std = ref.mean(0), ref.std(0).clamp_min(1e-6)
    torch.manual_seed(cfg.seed)
    clf = nn.Linear(fs.val.shape[1], num_classes)
    opt = torch.optim.Adam(clf.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n, val_accs, best = len(fs.train_y), [], (-1.0, 0, None)
    for epoch in range(cfg.epochs):
        x = fs.train[epoch % len(fs.train)]
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            loss = F.cross_entropy(clf((x[idx].float() - mean) / std), fs.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = int((clf((fs.val.float() - mean) / std).argmax(1) == fs.val_y).sum()) / len(fs.val_y)
        val_accs.append(acc)
        if acc > best[0]:
            best = (acc, epoch + 1, {k: v.clone() for k, v in clf.state_dict().items()})
    clf.load_state_dict(best[2])
    return clf, val_accs, best[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fit_is_the_reference_loop_bit_for_bit(dtype):
    """Batches z-scored in place in one reused buffer give the classifier of the plain per-batch formula,
    bit for bit, with a short last batch and with half-precision stored features."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 24, generator=g)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 4, (n,), generator=g)
        return (0.4 * centers[y] + torch.randn(n, 24, generator=g) + 3.0).to(dtype), y

    (xt, yt), (xv, yv), (xs, ys) = sample(203), sample(60), sample(80)
    fs = FeatureSet([xt], yt, xv, yv, xs, ys)
    cfg = ProbeConfig(epochs=4, batch_size=32, lr=1e-2, seed=3)
    out = train_linear_probe(fs, cfg, 4, keep_classifier=True)
    clf, val_accs, best_epoch = _reference_fit(fs, cfg, 4)
    assert torch.equal(out["classifier"]["weight"], clf.weight.detach())
    assert torch.equal(out["classifier"]["bias"], clf.bias.detach())
    assert [h["val_acc_pct"] for h in out["history"]] == pytest.approx([100 * a for a in val_accs])
    assert out["best_epoch"] == best_epoch
    assert out["test_acc_pct"] > 50  # the classes are separable: the fit learned


def test_zscore_rows_writes_the_formula_into_the_buffer():
    x = torch.randn(50, 7).to(torch.float16)
    idx = torch.tensor([3, 0, 49, 3])
    mean, std = torch.randn(7), torch.rand(7) + 0.5
    buf = torch.full((6, 7), float("nan"))
    z = zscore_rows(x, idx, mean, std, out=buf[:4])
    assert z.data_ptr() == buf.data_ptr() and torch.equal(z, (x[idx].float() - mean) / std)
