"""Building only some layers of a network, with the weights the whole build would give them.

A layer-parallel stage (:mod:`localssl.train.pipeline`) holds a few layers of the encoder and their objectives.
Inside :func:`only_layers`, the builders that construct a network one layer at a time (the encoders' layer
loops, :func:`~localssl.rules.base.build_objective`) call :func:`build_layer`: a layer in the set is built as
usual; any other is built on the ``meta`` device (shapes only, no memory) while every random draw of its
initialisation is made for real, on a scratch CPU tensor of the same shape and dtype that is dropped at once.
So the global generator advances exactly as in the whole build, and the layers that are built get the whole
build's weights bit for bit (``tests/test_partial_build.py`` compares them), while the others never hold
memory: the largest scratch tensor (one ``B`` matrix) is the only transient.

A builder that cannot run on ``meta`` (it reads a value, say) is built for real after the generator is put
back where it was, and moved to ``meta`` right after: the same weights, one layer's memory for a moment.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Container, Iterator
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

T = TypeVar("T")
M = TypeVar("M", bound=torch.nn.Module)
_ONLY: contextvars.ContextVar[Container[int] | None] = contextvars.ContextVar("localssl_only_layers", default=None)


@contextlib.contextmanager
def only_layers(layers: Container[int] | None) -> Iterator[None]:
    """Within the block, :func:`build_layer` builds for real only the layers (0-based) in ``layers``;
    ``None``: every layer (the default)."""
    token = _ONLY.set(layers)
    try:
        yield
    finally:
        _ONLY.reset(token)


def builds(index: int) -> bool:
    """Whether layer ``index`` (0-based) is built for real here (see :func:`only_layers`)."""
    layers = _ONLY.get()
    return layers is None or index in layers


class _DrawOnScratch(TorchDispatchMode):
    """Every random operation on a ``meta`` tensor is also run, with the same arguments, on a scratch CPU tensor:
    the generator advances as it would for the real tensor; the scratch is dropped."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if torch.Tag.nondeterministic_seeded in func.tags:
            on_cpu = lambda x: _scratch(x) if isinstance(x, torch.Tensor) else _cpu_device(x)  # noqa: E731
            func(*tree_map(on_cpu, args), **tree_map(on_cpu, kwargs))
        return func(*args, **kwargs)


def _scratch(t: torch.Tensor) -> torch.Tensor:
    if t.device.type != "meta":
        return t
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")


def _cpu_device(x: Any) -> Any:
    return torch.device("cpu") if isinstance(x, torch.device) and x.type == "meta" else x


def build_layer(index: int, make: Callable[[], T]) -> T:
    """``make()`` (a module of layer ``index``, 0-based), built for real if :func:`builds` says so, else on the
    ``meta`` device with its random draws made (see the module's docstring)."""
    if builds(index):
        return make()
    state = torch.get_rng_state()
    try:
        with torch.device("meta"), _DrawOnScratch():
            return make()
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        torch.set_rng_state(state)  # built for real from the same draws, then freed
        module = make()
        return module.to("meta") if isinstance(module, torch.nn.Module) else module


def to_device(module: M, device: torch.device | str) -> M:
    """``module.to(device)`` for its tensors in memory; its ``meta`` tensors (layers not built here) stay."""
    module._apply(lambda t: t if t.device.type == "meta" else t.to(device))
    return module


def real_numel(module: torch.nn.Module) -> int:
    """The number of parameter and buffer elements ``module`` holds in memory (``meta`` ones excluded)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() for t in tensors if t.device.type != "meta")


__all__ = ["build_layer", "builds", "only_layers", "real_numel", "to_device"]
