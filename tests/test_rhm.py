"""Random Hierarchy Model: generator statistics against the definition (Cagnetta et al., PRX 2024),
hierarchical CNN locality, views that only use training inputs, analyses on oracle encoders, and a
backprop run that must learn."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from localssl.data.rhm import RandomHierarchyModel, RHMError, RHMParams, one_hot
from localssl.evaluate.rhm import feature_correlation, readout_accuracy, synonym_sensitivity
from localssl.models.base import LayeredEncoder
from localssl.objectives.base import SpatialPool
from localssl.registry import MODELS, VIEWS

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = RHMParams(v=4, n_c=2, m=2, s=2, L=2)  # Pmax = 2 · 2^3 = 16
CPU = RHMParams(v=8, n_c=8, m=4, s=2, L=3)  # Pmax = 8 · 4^7 = 131072, P* = 512


def derivable_inputs(rhm: RandomHierarchyModel) -> set[tuple[int, ...]]:
    """Every input the grammar can produce, by brute-force expansion of the rules."""
    p = rhm.params
    strings = {(c,): c for c in range(p.n_c)}
    for level in range(p.L):
        nxt = {}
        for seq, label in strings.items():
            options = [[tuple(rhm.rules[level][f, k].tolist()) for k in range(p.m)] for f in seq]
            for combo in itertools.product(*options):
                nxt[tuple(x for t in combo for x in t)] = label
        strings = nxt
    return strings


def test_pmax_formula_and_index_enumerates_every_input_once():
    rhm = RandomHierarchyModel(SMALL, seed=3)
    assert SMALL.pmax == SMALL.n_c * SMALL.m ** ((SMALL.s**SMALL.L - 1) // (SMALL.s - 1)) == 16
    assert CPU.pmax == 131072 and CPU.p_star == 512
    tokens = rhm.tokens(torch.arange(SMALL.pmax))
    rows = {tuple(r) for r in tokens.tolist()}
    truth = derivable_inputs(rhm)
    assert len(rows) == SMALL.pmax == len(truth)  # distinct, and all of them
    assert rows == set(truth)
    labels = rhm.labels(torch.arange(SMALL.pmax))
    assert all(truth[tuple(r)] == int(y) for r, y in zip(tokens.tolist(), labels))


def test_tuples_distinct_and_every_production_rule_used():
    rhm = RandomHierarchyModel(CPU, seed=0)
    for level, rules in enumerate(rhm.rules):
        n_parents = CPU.n_c if level == 0 else CPU.v
        assert rules.shape == (n_parents, CPU.m, CPU.s)
        flat = rules.reshape(-1, CPU.s)
        assert len({tuple(t) for t in flat.tolist()}) == n_parents * CPU.m  # unambiguous grammar
        assert int(flat.min()) >= 0 and int(flat.max()) < CPU.v
    train, _ = rhm.split(4000, 0, seed=1)
    feats = rhm.features(train)
    for level in range(CPU.L):
        parents = feats[level].reshape(-1)
        children = feats[level + 1].reshape(len(train), -1, CPU.s).reshape(-1, CPU.s)
        used = {(int(a), tuple(t)) for a, t in zip(parents, children.tolist())}
        rules = rhm.rules[level]
        every = {(a, tuple(rules[a, k].tolist())) for a in range(len(rules)) for k in range(CPU.m)}
        assert used == every  # every rule used, and nothing but the rules


def test_index_roundtrip_and_features_are_consistent():
    rhm = RandomHierarchyModel(CPU, seed=1)
    idx = torch.randint(0, CPU.pmax, (500,), generator=torch.Generator().manual_seed(0))
    labels, choices = rhm.decode(idx)
    assert torch.equal(rhm.encode(labels, choices), idx)
    feats = rhm.features(idx)
    assert torch.equal(feats[0][:, 0], labels) and torch.equal(feats[-1], rhm.tokens(idx))
    assert [f.shape[1] for f in feats] == [1, 2, 4, 8]
    with pytest.raises(RHMError, match="Pmax"):
        rhm.decode(torch.tensor([CPU.pmax]))


def test_train_test_disjoint_nested_and_seeded():
    rhm = RandomHierarchyModel(CPU, seed=0)
    tr, te = rhm.split(3000, 1000, seed=5)
    assert len(set(tr.tolist())) == 3000 and len(set(te.tolist())) == 1000
    assert not set(tr.tolist()) & set(te.tolist())
    tr_small, te_again = rhm.split(500, 1000, seed=5)
    assert torch.equal(tr_small, tr[:500]) and torch.equal(te_again, te)  # nested train sets, fixed test set
    big = RandomHierarchyModel(RHMParams(v=16, n_c=4, m=8, s=2, L=3), seed=0)  # Pmax = 8.4M: streamed draws
    tr, te = big.split(2000, 500, seed=0)
    assert not set(tr.tolist()) & set(te.tolist()) and len(set(tr.tolist())) == 2000
    assert torch.equal(big.split(300, 500, seed=0)[0], tr[:300])
    with pytest.raises(RHMError, match="only Pmax=16"):
        RandomHierarchyModel(SMALL).split(10, 7)


def test_impossible_parameters_are_clear_errors():
    with pytest.raises(RHMError, match=r"m·v=20 > v\^s=16"):
        RHMParams(v=4, n_c=2, m=5, s=2, L=2)
    with pytest.raises(RHMError, match="m·n_c"):
        RHMParams(v=4, n_c=9, m=2, s=2, L=2)
    with pytest.raises(RHMError, match="int64"):
        RandomHierarchyModel(RHMParams(v=32, n_c=4, m=32, s=2, L=4))
    with pytest.raises(RHMError, match="positive integer"):
        RHMParams(v=0)


def test_resample_below_keeps_the_fixed_levels():
    rhm = RandomHierarchyModel(CPU, seed=0)
    idx = torch.arange(0, CPU.pmax, 97)
    g = torch.Generator().manual_seed(0)
    f = rhm.features(idx)
    for level in range(CPU.L + 1):
        g2 = rhm.features(rhm.resample_below(idx, level, g))
        for k in range(level + 1):
            assert torch.equal(g2[k], f[k])
        if level < CPU.L:
            assert (g2[-1] != f[-1]).any(dim=1).float().mean() > 0.5


def test_one_hot_and_whitening():
    tokens = torch.tensor([[0, 3, 1]])
    x = one_hot(tokens, 4)
    assert x.shape == (1, 4, 3) and torch.equal(x.argmax(1), tokens) and torch.equal(x.sum(1), torch.ones(1, 3))
    w = one_hot(tokens, 4, whiten=True)
    assert torch.allclose(w.sum(1), torch.zeros(1, 3), atol=1e-6)  # zero mean over the vocabulary
    assert torch.allclose(w.square().sum(1), torch.ones(1, 3), atol=1e-6)  # unit norm per position


def test_cnn_layer_k_sees_exactly_one_level_node():
    model = MODELS.get("rhm_cnn").builder(MODELS.make_config({"name": "rhm_cnn", "width": 16, "depth": 3}), 8)
    assert model.output_shapes((8, 8)) == [(16, 4), (16, 2), (16, 1)]
    x = one_hot(torch.randint(0, 8, (1, 8)), 8)
    base = model(x)
    x2 = x.clone()
    x2[0, :, 5] = 0.0
    x2[0, (int(x[0, :, 5].argmax()) + 1) % 8, 5] = 1.0  # change token 5
    for k, (h, h2) in enumerate(zip(base, model(x2))):
        changed = (h - h2).abs().sum(1)[0] > 0
        assert changed.tolist() == [t == 5 // 2 ** (k + 1) for t in range(h.shape[-1])]
    mlp = MODELS.get("rhm_mlp").builder(MODELS.make_config({"name": "rhm_mlp", "width": 16, "input_length": 8}), 8)
    assert mlp.output_shapes((8, 8)) == [(16,), (16,), (16,)]
    with pytest.raises(ValueError, match="input_length"):
        mlp(one_hot(torch.zeros(2, 4, dtype=torch.long), 8))


def test_spatial_pool_on_1d_maps():
    h = torch.randn(3, 5, 4)
    assert torch.allclose(SpatialPool(None)(h), h.mean(2))
    assert torch.equal(SpatialPool(1)(h), h.flatten(1))
    assert torch.allclose(SpatialPool(2)(h), torch.nn.functional.avg_pool1d(h, 2).flatten(1))
    assert SpatialPool(2).out_dim((5, 4)) == 10 and SpatialPool(None).out_dim((5, 4)) == 5


# ---------------------------------------------------------------------------------------------- views


def make_views(name: str, **kw):
    return VIEWS.get(name).builder(VIEWS.make_config({"name": name, **kw}), None)


@pytest.mark.parametrize("name", ["rhm_siblings", "rhm_mask"])
def test_views_are_masked_copies_of_the_batch_only(name):
    rhm = RandomHierarchyModel(CPU, seed=0)
    tr, _ = rhm.split(16, 0, seed=0)
    x, y = rhm.inputs(tr), rhm.labels(tr)
    views = make_views(name)
    for _ in range(10):  # several split levels
        vb = views(x, y)
        rows_per_view = len(vb.x) // 2
        per_input = rows_per_view // len(x)
        source = torch.arange(rows_per_view) // per_input if name == "rhm_siblings" else torch.arange(len(x))
        source = source.repeat(2)
        kept = vb.x.abs().sum(1) > 0  # (rows, T) positions holding a token
        assert torch.equal(vb.x, x[source] * kept[:, None, :])  # every row = its own training input, masked
        assert torch.equal(source[vb.pos], source)  # positive = the same input
        assert (source[vb.neg] != source).all()  # negative = another input
        assert torch.equal(kept[vb.neg], kept[vb.pos])  # negatives carry the positive's mask pattern
        assert not (kept & kept[vb.pos]).any()  # the two views of a pair share no token
        assert torch.equal(vb.labels, y[source])


def test_sibling_rows_are_single_subtrees_with_a_common_parent():
    x = one_hot(torch.randint(0, 8, (4, 8)), 8)
    views = make_views("rhm_siblings", depths=[1])
    vb = views(x)
    kept = vb.x.abs().sum(1) > 0
    assert (kept.sum(1) == 2).all()  # level-1 parent: each row keeps one level-2 subtree (2 tokens)
    first = kept.float().argmax(1)
    assert torch.equal(first // 4, first[vb.pos] // 4)  # both rows under the same level-1 node
    assert (first != first[vb.pos]).all()


def test_views_reject_bad_shapes():
    with pytest.raises(ValueError, match="s\\^L"):
        make_views("rhm_siblings")(torch.zeros(4, 8, 6))
    with pytest.raises(ValueError, match="at least 2"):
        make_views("rhm_mask")(torch.zeros(1, 8, 8))


# ------------------------------------------------------------------------------------------- analyses


class Oracle(nn.Module):
    """Outputs the one-hot hidden feature of every node of ``level`` (as a (N, v, s^level) map)."""

    def __init__(self, rhm: RandomHierarchyModel, level: int) -> None:
        super().__init__()
        self.rhm, self.level = rhm, level
        self.codes = {tuple(r): i for i, r in enumerate(rhm.tokens(torch.arange(rhm.params.pmax)).tolist())}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.tensor([self.codes[tuple(r)] for r in x.argmax(1).tolist()])
        f = self.rhm.features(idx)[self.level]
        return one_hot(f, max(self.rhm.params.v, self.rhm.params.n_c))


class OracleEncoder(LayeredEncoder):
    def __init__(self, rhm: RandomHierarchyModel) -> None:
        super().__init__([nn.Identity()])
        self.oracles = nn.ModuleList(Oracle(rhm, rhm.params.L - k) for k in range(1, rhm.params.L + 1))
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [o(x) for o in self.oracles]

    def __len__(self) -> int:
        return len(self.oracles)


def test_sensitivity_and_correlation_of_a_perfect_hierarchy():
    p = RHMParams(v=4, n_c=2, m=2, s=2, L=3)  # Pmax = 2 · 2^7 = 256
    rhm = RandomHierarchyModel(p, seed=0)
    enc = OracleEncoder(rhm)
    idx = torch.arange(p.pmax)
    S = synonym_sensitivity(enc, rhm, idx, seed=0)
    eta = feature_correlation(enc, rhm, idx)
    for k in range(p.L):  # layer k+1 = the features of level L−k−1
        level = p.L - k - 1
        assert S[k, level:].abs().max() < 1e-6  # invariant to everything below its level
        if level > 0:
            assert S[k, :level].min() > 0.1  # but not to the levels above
        assert eta[k, level] == pytest.approx(1.0, abs=1e-9)
        assert torch.isnan(eta[k, level + 1 :]).all()
    random = MODELS.get("rhm_cnn").builder(MODELS.make_config({"name": "rhm_cnn", "width": 32, "depth": 3}), 4)
    assert synonym_sensitivity(random, rhm, idx)[0, 2] > 0.2  # a random layer is not synonym-invariant


# ------------------------------------------------------------------------------------------- learning


def test_backprop_learns_a_tiny_rhm_above_chance():
    from localssl.experiments.rhm.loop import Recipe, build_recipe, rhm_data, train_rhm

    params = RHMParams(v=8, n_c=4, m=2, s=2, L=3)  # P* = 32, Pmax = 512
    rhm = RandomHierarchyModel(params, seed=0)
    _, x, y, _, xt, yt = rhm_data(rhm, 256, 256, split_seed=0, whiten=False)
    recipe = Recipe(
        "bp",
        {"name": "rhm_plain"},
        {"name": "rhm_cnn", "width": 32},
        {"name": "cross_entropy"},
        {"name": "backprop"},
        {"lr": 3e-3, "optimizer": "adam", "batch_size": 32, "epochs": 40},
    )
    built = build_recipe(recipe, params, seed=0)
    before = readout_accuracy(built.encoder, built.rule.objectives["3"], xt, yt)
    train_rhm(built, recipe, x, y)
    after = readout_accuracy(built.encoder, built.rule.objectives["3"], xt, yt)
    assert after > 0.8 > before + 0.3  # chance is 0.25


def test_self_supervised_training_only_sees_the_training_inputs():
    """The views (which make the positive pairs) receive nothing but batches of the P training inputs,
    and (test above) every row they emit is a masked copy of its own batch input: no held-out input
    and no fresh generator draw can enter a positive pair."""
    from localssl.experiments.rhm.loop import build_recipe, rhm_data, train_rhm
    from localssl.experiments.rhm.sample_complexity import RECIPES

    params = RHMParams(v=8, n_c=4, m=2, s=2, L=3)
    rhm = RandomHierarchyModel(params, seed=0)
    _, x, y, _, xt, _ = rhm_data(rhm, 64, 64, split_seed=0, whiten=False)
    train_rows = {tuple(r) for r in x.flatten(1).tolist()}
    seen: list[torch.Tensor] = []

    class Spy(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, xb: torch.Tensor, yb: torch.Tensor):
            seen.append(xb.clone())
            return self.inner(xb, yb)

    for label in ("clapp", "lpl"):
        recipe = RECIPES[label].replace(model={"width": 8}, min_steps=6, train={"epochs": 1, "batch_size": 16})
        built = build_recipe(recipe, params, seed=0)
        built.views = Spy(built.views)
        train_rhm(built, recipe, x, y)
    assert len(seen) == 12
    for xb in seen:
        assert all(tuple(r) in train_rows for r in xb.flatten(1).tolist())
    assert not train_rows & {tuple(r) for r in xt.flatten(1).tolist()}


def test_dfa_on_the_rhm_cnn_sends_the_top_error_through_fixed_matrices():
    from localssl.experiments.rhm.loop import build_recipe, rhm_data
    from localssl.experiments.rhm.sample_complexity import RECIPES

    params = RHMParams(v=8, n_c=4, m=2, s=2, L=3)
    rhm = RandomHierarchyModel(params, seed=0)
    _, x, y, _, _, _ = rhm_data(rhm, 32, 0, split_seed=0, whiten=False)
    built = build_recipe(RECIPES["dfa"].replace(model={"width": 8}), params, seed=0)
    enc, rule = built.encoder, built.rule
    vb = built.views(x, y)
    b1 = rule.feedback(1).clone()
    rule.step(enc, vb)
    grad = enc.layers[0][0].weight.grad.clone()
    # the same update by hand: layer 1 descends <h_1, B_1 e>, e = dL/dh_top, input detached
    hs = enc(x)
    top = hs[-1].detach().requires_grad_(True)
    (e,) = torch.autograd.grad(rule.objectives["3"](top, [top], vb).loss, top)
    h1 = enc.layers[0](x)
    (expected,) = torch.autograd.grad((h1 * (e.flatten(1) @ b1.T).view_as(h1)).sum(), enc.layers[0][0].weight)
    assert torch.allclose(grad, expected, atol=1e-6)
    assert b1.shape == (8 * 4, 8) and torch.equal(rule.feedback(1), b1)  # fixed, never trained
    assert not any(p is rule.feedback(1) for p in rule.parameters())


def test_grid_caches_each_run_and_reports_after_each(tmp_path, monkeypatch):
    """A finished run is stored once and reused by the next call (an interrupted grid resumes); the
    callback sees the results after every run; seed 0 and small P come first."""
    import localssl.experiments.rhm.sample_complexity as exp

    calls = []

    def fake_run(job):
        calls.append((job.seed, job.n_train))
        r = {"rule": job.recipe.label, "P": job.n_train, "P_over_Pstar": 1.0, "seed": job.seed}
        return {"result": {**r, "test_acc": 0.5, "train_seconds": 0.0}}

    monkeypatch.setattr(exp, "run_job", fake_run)
    recipe = exp.RECIPES["bp"].replace(label="bp")
    jobs = [exp.Job(recipe, SMALL, p, 4, seed) for seed in (1, 0) for p in (8, 4)]
    seen = []
    out = exp.run_jobs(jobs, workers=1, cache=tmp_path, on_result=lambda rs: seen.append(len(rs)))
    assert calls == [(0, 4), (0, 8), (1, 4), (1, 8)] and seen == [1, 2, 3, 4]
    assert [r["result"]["P"] for r in out] == [8, 4, 8, 4]  # job order
    assert sorted(f.name for f in tmp_path.iterdir())[0] == "bp-P4-s0.json"
    calls.clear()
    again = exp.run_jobs(jobs, workers=1, cache=tmp_path)
    assert calls == [] and again == out


def test_worker_count_reads_localssl_workers(monkeypatch):
    from localssl.experiments import worker_count

    monkeypatch.delenv("LOCALSSL_WORKERS", raising=False)
    assert worker_count(1) == 1
    monkeypatch.setenv("LOCALSSL_WORKERS", "1")
    assert worker_count(2) == 1
    monkeypatch.setenv("LOCALSSL_WORKERS", "two")
    with pytest.raises(ValueError, match="LOCALSSL_WORKERS must be a positive integer"):
        worker_count(2)
