"""Training on the Random Hierarchy Model with the library's registered components.

The RHM data are tiny (``v × s^L`` one-hot inputs) and a sample-complexity curve needs many short runs,
so this is a small dedicated loop instead of the image :class:`~localssl.train.Trainer`: the inputs
live in one tensor, and every step is ``views(x, y) -> rule.step(encoder, views) -> optimizer.step()``
with the registered views, model, objective and rule of a recipe (:class:`Recipe`). Nothing here
re-implements a rule or a loss.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import torch
from torch import nn

from localssl.config import ProbeConfig, TrainConfig
from localssl.data.rhm import RandomHierarchyModel, RHMParams
from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec
from localssl.registry import MODELS, RULES, VIEWS, ConfigError, build_dataclass
from localssl.rules.base import Rule
from localssl.utils import make_optimizer


@dataclasses.dataclass
class Recipe:
    """One rule on the RHM: a configuration of the three axes plus a model and a schedule.

    ``evaluation``: ``readout`` (test accuracy of the rule's own ``cross_entropy`` read-out) or ``probe``
    (linear probe on frozen features, for self-supervised rules: ``probe_layers``)."""

    label: str
    views: dict[str, Any]
    model: dict[str, Any]
    objective: dict[str, Any]
    rule: dict[str, Any]
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    evaluation: str = "readout"
    probe_layers: str = "all"  # probe evaluation: 'all' (concatenated, the library's probe) or a layer number
    whiten: bool = False
    min_steps: int = 0  # at least this many optimizer steps, whatever P (small P gets more epochs)

    def __post_init__(self) -> None:
        if self.evaluation not in ("readout", "probe"):
            raise ConfigError(f"recipe '{self.label}': evaluation must be 'readout' or 'probe'")

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed; dict fields are merged key by key."""
        out = copy.deepcopy(self)
        for key, value in changes.items():
            current = getattr(out, key)
            setattr(out, key, {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value)
        return out


@dataclasses.dataclass
class Built:
    encoder: LayeredEncoder
    views: nn.Module
    rule: Rule
    train: TrainConfig
    layers: list[LayerSpec]


def build_recipe(recipe: Recipe, params: RHMParams, seed: int, device: torch.device | str = "cpu") -> Built:
    """Instantiate a recipe for an RHM, seeded (same recipe + seed = same initial weights)."""
    model_raw = dict(recipe.model)
    if model_raw.get("name") == "rhm_cnn":
        model_raw.setdefault("s", params.s)
        model_raw.setdefault("depth", params.L)
    elif model_raw.get("name") == "rhm_mlp":
        model_raw.setdefault("input_length", params.input_length)
    objective_raw = dict(recipe.objective)
    if objective_raw.get("name") == "cross_entropy":
        objective_raw.setdefault("num_classes", params.n_c)
    objective_raw.setdefault("pooling", "none")
    views_raw = dict(recipe.views)
    if views_raw.get("name") == "rhm_mask":
        views_raw.setdefault("s", params.s)
    model_cfg = MODELS.make_config(model_raw)
    from localssl.registry import OBJECTIVES

    objective_cfg = OBJECTIVES.make_config(objective_raw)
    rule_cfg = RULES.make_config(recipe.rule)
    views_cfg = VIEWS.make_config(views_raw)
    train = build_dataclass(TrainConfig, {"seed": seed, **recipe.train}, where="train")
    torch.manual_seed(seed)
    encoder = MODELS.get(model_cfg.name).builder(model_cfg, in_channels=params.v)
    shapes = encoder.output_shapes((params.v, params.input_length))
    layers = [LayerSpec(i, shape, None) for i, shape in enumerate(shapes)]
    rule = RULES.get(rule_cfg.name).builder(rule_cfg, objective_cfg, layers)
    views = VIEWS.get(views_cfg.name).builder(views_cfg, None)
    return Built(encoder.to(device), views.to(device), rule.to(device), train, layers)


def n_steps(recipe: Recipe, train: TrainConfig, n_train: int) -> int:
    per_epoch = max(1, n_train // train.batch_size)
    return max(recipe.min_steps, train.epochs * per_epoch)


def train_rhm(built: Built, recipe: Recipe, x: torch.Tensor, y: torch.Tensor, log_every: int = 0) -> dict[str, Any]:
    """Train on the inputs ``x`` (N, v, T) with labels ``y``; returns the last logged metrics.

    Only ``x``/``y`` (the P training inputs) ever reach the views and the rule."""
    train = built.train
    weight_decay = 0.0 if train.weight_decay == "auto" else float(train.weight_decay)
    params = list(built.rule.parameters_to_train(built.encoder))
    opt = make_optimizer(train.optimizer, params, train.lr, weight_decay, train.momentum)
    g = torch.Generator().manual_seed(train.seed)
    total = n_steps(recipe, train, len(x))
    bs = min(train.batch_size, len(x))
    per_epoch = max(1, len(x) // bs)
    built.encoder.train()
    perm = torch.randperm(len(x), generator=g)
    window: dict[str, float] = {}
    t0 = time.perf_counter()
    for step in range(total):
        j = step % per_epoch
        if j == 0 and step:
            perm = torch.randperm(len(x), generator=g)
        idx = perm[j * bs : (j + 1) * bs].to(x.device)
        vb = built.views(x[idx], y[idx])
        opt.zero_grad(set_to_none=True)
        metrics = built.rule.step(built.encoder, vb)
        opt.step()
        for k, v in metrics.items():
            window[k] = 0.98 * window.get(k, float(v)) + 0.02 * float(v)
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{total} " + " ".join(f"{k}={v:.3g}" for k, v in sorted(window.items())), flush=True)
    window["steps"] = total
    window["seconds"] = time.perf_counter() - t0
    return window


def rhm_data(
    rhm: RandomHierarchyModel, n_train: int, n_test: int, split_seed: int, whiten: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train index, x, y, test index, x, y) for a nested train draw and a fixed disjoint test set."""
    tr, te = rhm.split(n_train, n_test, split_seed)
    return tr, rhm.inputs(tr, whiten), rhm.labels(tr), te, rhm.inputs(te, whiten), rhm.labels(te)


DEFAULT_PROBE = ProbeConfig(epochs=100, lr=1e-3, batch_size=64, weight_decay=0.0, val_size=0, standardize=True)
