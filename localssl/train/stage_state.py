"""A layer-parallel stage's share of a checkpoint (:mod:`localssl.train.pipeline`), in the one-process format.

Every key of the encoder's and the rule's state belongs to one stage: ``layers.3.…`` (encoder) and
``objectives.4.…`` (rule) to the stage that holds layer 4 (1-based), anything outside the layers and their
objectives to stage 0 (:func:`owner`). At a checkpoint each stage sends rank 0 its keys, its per-layer optimizer
state, its generators and its metric window (:func:`part`); rank 0 puts them in the one-process checkpoint
(:func:`merge_parts`), which ``localssl probe``, ``export`` and ``--resume`` (with any number of stages) read
like any other. On resume each stage takes only its keys (:func:`own_slice`) from the file, mapped rather than
read whole."""

from __future__ import annotations

from typing import Any

import torch

_PREFIXES = {"encoder": ("layers.", 0), "rule": ("objectives.", 1)}  # key prefix, then the 1-based offset


def owner(section: str, key: str, bounds: list[int]) -> int:
    """The stage holding ``key`` of the checkpoint's ``section`` (``encoder`` or ``rule``) with stage bounds
    ``bounds`` (``[0, cut_1, ..., n_layers]``)."""
    prefix, offset = _PREFIXES[section]
    if not key.startswith(prefix):
        return 0
    layer = int(key[len(prefix) :].split(".", 1)[0]) - offset
    return next(s for s in range(len(bounds) - 1) if bounds[s] <= layer < bounds[s + 1])


def own(section: str, state: dict[str, Any], bounds: list[int], stage: int) -> dict[str, Any]:
    """The entries of ``state`` (a state dict of ``section``) that ``stage`` holds."""
    return {k: v for k, v in state.items() if owner(section, k, bounds) == stage}


def part(
    encoder: torch.nn.Module,
    rule: torch.nn.Module,
    optimizers: dict[str, Any],
    bounds: list[int],
    stage: int,
    **extra: Any,
) -> dict[str, Any]:
    """A stage's share of a checkpoint: its encoder and rule keys, its per-layer optimizer state
    (``optimizers``: ``{"3": state}``) and ``extra`` (step, generators, metric window)."""
    return {
        "encoder": own("encoder", encoder.state_dict(), bounds, stage),
        "rule": own("rule", rule.state_dict(), bounds, stage),
        "optimizer": optimizers,
        **extra,
    }


def merge_parts(state: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """Put every stage's part (in stage order) in ``state``, rank 0's one-process checkpoint whose network
    entries are those of a stage (other stages' layers ``meta``): same keys, same order."""
    for key in ("encoder", "rule"):
        merged = {k: v for p in parts for k, v in p[key].items()}
        missing = [k for k in state[key] if k not in merged]
        if missing:
            raise RuntimeError(f"no stage sent {key} state {missing[:3]}: the checkpoint would be incomplete")
        state[key] = {k: merged[k] for k in state[key]}
    per_layer = {k: v for p in parts for k, v in p["optimizer"].items()}
    state["optimizer"] = {"per_layer": {k: per_layer[k] for k in sorted(per_layer, key=int)}}


def own_slice(ckpt: dict[str, Any], bounds: list[int], stage: int) -> dict[str, Any]:
    """``ckpt`` (possibly mapped from its file) with only ``stage``'s network and optimizer state, copied into
    memory of its own (so the file's mapping can go)."""
    layers = range(bounds[stage], bounds[stage + 1])
    per_layer = ckpt["optimizer"].get("per_layer")
    if per_layer is None:
        raise ValueError("the checkpoint and train.step_each_layer disagree; resume with the run's own setting")
    optimizer = {k: _copied(v) for k, v in per_layer.items() if int(k) in layers}
    return {
        **ckpt,
        "encoder": {k: v.clone() for k, v in own("encoder", ckpt["encoder"], bounds, stage).items()},
        "rule": {k: v.clone() for k, v in own("rule", ckpt["rule"], bounds, stage).items()},
        "optimizer": {"per_layer": optimizer},
    }


def _copied(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: _copied(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copied(v) for v in obj]
    return obj
