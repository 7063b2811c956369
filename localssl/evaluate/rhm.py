"""Analyses of encoders trained on the Random Hierarchy Model (Cagnetta et al., PRX 2024).

* :func:`readout_accuracy` — test accuracy of a supervised rule's own read-out (``cross_entropy``).
* :func:`probe_accuracy` — linear probe on frozen features (the evaluation of self-supervised rules).
* :func:`synonym_sensitivity` — Cagnetta et al.'s synonymic sensitivity, per layer and level: how much a
  layer's output moves when every production rule below a level is resampled while the features of
  that level (and above) stay fixed, relative to the move to an unrelated input,

      S_k(ℓ) = E‖h_k(x) − h_k(x'_ℓ)‖² / E‖h_k(x) − h_k(y)‖²,

  with ``x'_ℓ`` a synonymic version of ``x`` at level ℓ and ``y`` another test input. A layer that has
  learnt the hidden feature of its receptive field's root (level ``L − k`` for the hierarchical CNN)
  has ``S_k(L − k) = 0``.
* :func:`feature_correlation` — correlation ratio ``η²`` of a layer's units with the hidden feature of
  each level: the fraction of the layer's variance explained by the feature of the level-ℓ ancestor of
  its position (1 = the layer is a function of that feature, 0 = unrelated).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from localssl.config import ProbeConfig
from localssl.data.rhm import RandomHierarchyModel
from localssl.evaluate.features import FeatureSet
from localssl.evaluate.probe import train_linear_probe
from localssl.models.base import LayeredEncoder
from localssl.objectives.base import ReadoutObjective


@torch.no_grad()
def layer_outputs(encoder: LayeredEncoder, x: torch.Tensor, batch_size: int = 4096) -> list[torch.Tensor]:
    """Every layer's output for all of ``x`` (evaluation mode, no graph)."""
    was_training = encoder.training
    encoder.eval()
    chunks = [encoder(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    encoder.train(was_training)
    return [torch.cat([c[k] for c in chunks]) for k in range(len(encoder))]


@torch.no_grad()
def readout_accuracy(encoder: LayeredEncoder, readout: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of ``readout(pool(top layer))``; ``readout`` is the ``cross_entropy`` objective of the
    rule (it owns the pooling and the linear read-out)."""
    if not isinstance(readout, ReadoutObjective):
        raise TypeError(f"{type(readout).__name__} has no linear read-out; evaluate it with a linear probe")
    h = layer_outputs(encoder, x)[-1]
    logits = readout.readout(readout.pool(h))
    return float((logits.argmax(1) == y).float().mean())


def flat_features(encoder: LayeredEncoder, x: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """Concatenated flattened outputs of ``layers`` (0-based)."""
    hs = layer_outputs(encoder, x)
    return torch.cat([hs[k].flatten(1) for k in layers], dim=1)


def probe_accuracy(
    encoder: LayeredEncoder,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    num_classes: int,
    cfg: ProbeConfig,
    layers: list[int] | None = None,
) -> dict[str, float]:
    """Linear probe on frozen features of ``layers`` (default: the top layer), trained on the labelled
    training inputs for a fixed number of epochs (no model selection on held-out data)."""
    layers = [len(encoder) - 1] if layers is None else layers
    f_train, f_test = flat_features(encoder, x_train, layers), flat_features(encoder, x_test, layers)
    empty = f_train.new_zeros((0, f_train.shape[1]))
    fs = FeatureSet([f_train], y_train, empty, y_train.new_zeros(0), f_test, y_test)
    out = train_linear_probe(fs, cfg, num_classes, cfg.standardize)
    return {"test_acc": out["test_acc_pct"] / 100, "train_acc": out["train_acc_pct"] / 100}  # fractions, as readouts


@torch.no_grad()
def synonym_sensitivity(
    encoder: LayeredEncoder,
    rhm: RandomHierarchyModel,
    index: torch.Tensor,
    whiten: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``S[k, ℓ]`` for layers ``k = 0..K−1`` (0-based) and levels ``ℓ = 0..L`` (see module docstring)."""
    g = torch.Generator().manual_seed(seed)
    x = rhm.inputs(index, whiten).to(device)
    hs = [h.flatten(1) for h in layer_outputs(encoder, x)]
    other = index[torch.randperm(len(index), generator=g)]  # an unrelated input per input
    hs_other = [h.flatten(1) for h in layer_outputs(encoder, rhm.inputs(other, whiten).to(device))]
    ref = torch.stack([(a - b).square().sum(1).mean() for a, b in zip(hs, hs_other)]).clamp_min(1e-12)
    out = torch.zeros(len(hs), rhm.params.L + 1)
    for level in range(rhm.params.L + 1):
        syn = rhm.resample_below(index, level, g)
        hs_syn = [h.flatten(1) for h in layer_outputs(encoder, rhm.inputs(syn, whiten).to(device))]
        out[:, level] = torch.stack([(a - b).square().sum(1).mean() for a, b in zip(hs, hs_syn)]).cpu() / ref.cpu()
    return out


def position_depth(h: torch.Tensor, s: int) -> int:
    """Tree level whose nodes the positions of ``h`` (N, C, T) correspond to (T = s^depth); 0 for (N, D)."""
    if h.dim() == 2:
        return 0
    t = h.shape[-1]
    depth = round(math.log(t, s)) if t > 1 else 0
    if s**depth != t:
        raise ValueError(f"a layer with {t} positions does not tile an s={s} tree")
    return depth


@torch.no_grad()
def feature_correlation(
    encoder: LayeredEncoder,
    rhm: RandomHierarchyModel,
    index: torch.Tensor,
    whiten: bool = False,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``η²[k, ℓ]``: fraction of layer ``k``'s variance explained by the level-ℓ ancestor feature of each
    position (levels deeper than the layer's positions are NaN: a position covers several such nodes)."""
    p = rhm.params
    feats = rhm.features(index)
    hs = layer_outputs(encoder, rhm.inputs(index, whiten).to(device))
    out = torch.full((len(hs), p.L + 1), float("nan"))
    for k, h in enumerate(hs):
        h = h.cpu().double()
        depth = position_depth(h, p.s)
        h = h if h.dim() == 3 else h[:, :, None]  # (N, C, T)
        total = (h - h.mean(0, keepdim=True)).square().sum()
        if total <= 0:
            out[k, : depth + 1] = 0.0
            continue
        for level in range(depth + 1):
            n_values = p.n_c if level == 0 else p.v
            ancestor = feats[level][:, torch.arange(h.shape[-1]) // p.s ** (depth - level)]  # (N, T)
            between = h.new_zeros(())
            for t in range(h.shape[-1]):
                onehot = torch.nn.functional.one_hot(ancestor[:, t], n_values).double()  # (N, V)
                counts = onehot.sum(0)
                means = (onehot.T @ h[:, :, t]) / counts.clamp_min(1)[:, None]  # (V, C)
                grand = h[:, :, t].mean(0)
                between = between + (counts[:, None] * (means - grand).square()).sum()
            out[k, level] = float(between / total)
    return out
