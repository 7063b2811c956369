"""A dense ``B`` without a ``B``-sized allocation per step.

Every step of a dense ``B`` (up to 8192 × 8192 at full width) used to allocate ``B``-sized tensors: its
weight gradient (a fresh fp32 tensor that becomes ``.grad``, freed again by ``zero_grad``) and, under
``torch.autocast`` (bf16), the weight's bf16 cast in forward and the bf16 gradient before its cast back. At
128–256 MB each, glibc serves and frees them with ``mmap``/``munmap``, so every step pays their page faults
again (``benchmarks/RESULTS.md``, "The CPU fast path", the profile).

:func:`kept_linear` computes the same values into kept memory. Forward: under a low-precision autocast
the weight is cast *in place* into a scratch tensor (shared by every ``B`` of that shape: it is needed only
during the product) and the product is the one autocast runs, ``F.linear(r, W_low)``; in fp32 the weight
is used as it is. Backward: the weight gradient is the product autograd runs for ``nn.Linear``
(``gᵀ r``), written straight into an fp32 buffer kept by the module (in fp32), or into a shared
low-precision scratch and then cast into that buffer (bf16); the buffer becomes ``.grad``, or is added to
an existing ``.grad``. The values are those of the ordinary path bit for bit (``tests/test_kept_b.py``);
only where they live changes. The kept buffer *is* ``.grad`` after a step: code that keeps a reference to
``.grad`` across steps must copy it. The gradient goes to ``.grad`` directly, not through autograd's
``AccumulateGrad`` (no gradient hooks run), so the path is used only inside :func:`kept_b_gradients`
(entered by the local rule around its ``backward()`` calls) and never under ``torch.compile``; outside it
``B`` is an ordinary ``nn.Linear`` (``torch.autograd.grad`` of a loss with respect to ``B`` still works).
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("localssl_kept_b", default=False)
_SCRATCH: weakref.WeakValueDictionary[tuple, torch.Tensor] = weakref.WeakValueDictionary()


@contextlib.contextmanager
def kept_b_gradients() -> Iterator[None]:
    """Within this context a dense ``B`` (fp32, or under a 16-bit autocast) uses :func:`kept_linear`, whose
    weight gradient is written to ``.grad`` during ``backward()``."""
    token = _ENABLED.set(True)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def scratch(role: str, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor shared by every caller asking for the same ``role``, shape, dtype and device while one of
    them holds it (each :class:`KeptBuffers` holds its own reference)."""
    key = (role, tuple(shape), dtype, str(device))
    t = _SCRATCH.get(key)
    if t is None:
        t = torch.empty(shape, dtype=dtype, device=device)
        _SCRATCH[key] = t
    return t


class KeptBuffers:
    """The memory one dense ``B`` keeps between steps: references to the shared low-precision scratch
    (weight and weight gradient; under autocast only) and its own fp32 gradient buffer (a trainable ``B``
    only), made on first use."""

    def __init__(self) -> None:
        self.low: torch.Tensor | None = None
        self.grad_low: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None

    def ready(self, weight: torch.Tensor, dtype: torch.dtype) -> None:
        """Buffers for ``weight`` computed in ``dtype`` (its own dtype: no scratch)."""
        grad = self.grad
        if not weight.requires_grad:  # a fixed B: nothing to keep for a gradient
            self.grad = None
        elif grad is None or grad.shape != weight.shape or grad.dtype != weight.dtype or grad.device != weight.device:
            self.grad = torch.empty_like(weight, memory_format=torch.contiguous_format)
        if dtype == weight.dtype:
            self.low = self.grad_low = None
        elif self.low is None or self.low.shape != weight.shape or self.low.dtype != dtype:
            self.low = scratch("weight", weight.shape, dtype, weight.device)
            self.grad_low = scratch("grad", weight.shape, dtype, weight.device)

    def tensors(self) -> list[torch.Tensor]:
        """The kept tensors: the fp32 gradient buffer and the shared scratch it uses."""
        return [t for t in (self.grad, self.low, self.grad_low) if t is not None]


class _KeptGrad(torch.autograd.Function):
    """The identity on the product ``out = F.linear(r, W)`` (computed without a graph), whose backward writes
    the weight gradient ``gᵀ r`` into kept memory and ``W.grad`` (see the module docstring)."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, weight: torch.Tensor, r: torch.Tensor, kept: KeptBuffers) -> torch.Tensor:  # type: ignore[override]
        ctx.kept, ctx.weight = kept, weight
        ctx.save_for_backward(r)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[None, None, None, None]:  # type: ignore[override]
        (r,) = ctx.saved_tensors
        kept: KeptBuffers = ctx.kept
        weight: torch.Tensor = ctx.weight
        assert kept.grad is not None
        if kept.grad_low is not None:  # low precision: the product into scratch, cast into the buffer
            torch.mm(g.t(), r, out=kept.grad_low)  # nn.Linear's weight gradient, as autograd computes it
            if weight.grad is None:
                weight.grad = kept.grad.copy_(kept.grad_low)
            else:
                weight.grad.add_(kept.grad_low)
        elif weight.grad is None:
            weight.grad = torch.mm(g.t(), r, out=kept.grad)
        else:
            weight.grad.add_(torch.mm(g.t(), r))
        return None, None, None, None


def _dtype(r: torch.Tensor) -> torch.dtype:
    """The dtype a linear map of ``r`` computes in: autocast's where it is on for ``r``'s device, else ``r``'s."""
    device = r.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else r.dtype


def uses_kept_path(linear: nn.Linear, r: torch.Tensor) -> bool:
    """Whether :func:`kept_linear` replaces ``linear(r)`` here: inside :func:`kept_b_gradients`, a bias-free
    fp32 weight, a 2-D reference that needs no gradient, computed in fp32 or a 16-bit autocast, and not
    while ``torch.compile`` traces."""
    if not _ENABLED.get() or linear.bias is not None or r.requires_grad or r.dim() != 2:
        return False
    if linear.weight.dtype != torch.float32 or torch.compiler.is_compiling():
        return False
    dtype = _dtype(r)
    return dtype in (torch.float32, torch.bfloat16, torch.float16) and r.dtype in (torch.float32, dtype)


def kept_linear(linear: nn.Linear, r: torch.Tensor, kept: KeptBuffers) -> torch.Tensor:
    """``linear(r)`` (under autocast where it is on), computed in kept memory (see the module docstring);
    the weight's gradient goes to ``linear.weight.grad`` during backward."""
    dtype, weight = _dtype(r), linear.weight
    kept.ready(weight, dtype)
    with torch.autocast(r.device.type, enabled=False):
        r = r.to(dtype)
        with torch.no_grad():
            w = weight.detach() if kept.low is None else kept.low.copy_(weight)  # the cast autocast would allocate
        out = F.linear(r, w)  # autocast's product, no graph (neither side needs a gradient)
        if not (weight.requires_grad and torch.is_grad_enabled()):
            return out
        return _KeptGrad.apply(out, weight, r, kept)


def kept_buffer_bytes(module: nn.Module) -> int:
    """Bytes the dense ``B`` maps under ``module`` keep between steps (their gradient buffers and the
    scratch they share, each counted once)."""
    kept = {}
    for m in module.modules():
        if isinstance(getattr(m, "kept", None), KeptBuffers):
            kept |= {t.data_ptr(): t.numel() * t.element_size() for t in m.kept.tensors()}
    return sum(kept.values())
